// Package app is the admin service's composition root.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/audit"
	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/idempotency"
	"github.com/closedloop/closedloop/libs/ingesttokens"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/service"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	"github.com/closedloop/closedloop/services/admin/internal/api"
	"github.com/closedloop/closedloop/services/admin/internal/backfill"
	"github.com/closedloop/closedloop/services/admin/internal/dlq"
	"github.com/closedloop/closedloop/services/admin/internal/offsets"
	"github.com/closedloop/closedloop/services/admin/internal/replay"
)

// Config is the admin service's configuration.
type Config struct {
	Common service.Common
	// PublicURL (ADMIN_PUBLIC_URL, default http://localhost:8080) is the
	// ingress's public base URL, for the ingest URLs handed out.
	PublicURL string
	// IngressURL (ADMIN_INGRESS_URL, default PublicURL) is where the admin
	// posts test events: the ingress as the admin reaches it.
	IngressURL string
	// Instances (ADMIN_SERVICES): the services' gRPC addresses,
	// "normalizer=host:9192,enricher=host:9193,sink-warehouse=host:9194,...";
	// a name may repeat (replicas).
	Instances map[string][]string
	// Sinks (ADMIN_SINKS, default sink-warehouse): the sink services whose
	// dead letters and lag are reported; sink-webhook is added when the
	// pipeline file has webhook endpoints.
	Sinks []string
	// MaxLag (ADMIN_MAX_LAG, default 10000): a stage further behind is a problem.
	MaxLag int
	// RedisURL (REDIS_URL) is the normalizer's Redis, whose dedupe store
	// tells backfills and reconciliation what the pipeline has seen
	// (required when a source has api.reconcile); RedisPrefix
	// (REDIS_KEY_PREFIX, default "closedloop:") as the normalizer's.
	RedisURL, RedisPrefix string
	// GaugeInterval (ADMIN_GAUGE_INTERVAL, default 15s) is how often the
	// closedloop.pipeline.lag and closedloop.dlq.depth gauges are sampled.
	GaugeInterval time.Duration
	// Groups are the consumer groups, named as the services name them.
	NormalizerGroup, EnricherGroup, WarehouseGroup, WebhookGroup string
	// TLS (ADMIN_TLS_CERT, ADMIN_TLS_KEY; ADMIN_TLS_CLIENT_CA for mTLS).
	TLSCert, TLSKey, TLSClientCA string
	Pipeline                     *service.Pipeline
}

// Load reads and validates the configuration.
func Load(e *config.Env) (Config, error) {
	c := Config{
		Common:          service.LoadCommon(e, 8087, 9097),
		PublicURL:       e.String("ADMIN_PUBLIC_URL", "http://localhost:8080"),
		Sinks:           e.List("ADMIN_SINKS", []string{"sink-warehouse"}),
		MaxLag:          e.Int("ADMIN_MAX_LAG", 10000),
		GaugeInterval:   e.Duration("ADMIN_GAUGE_INTERVAL", 15*time.Second),
		RedisURL:        e.String("REDIS_URL", ""),
		RedisPrefix:     e.String("REDIS_KEY_PREFIX", "closedloop:"),
		NormalizerGroup: e.String("NORMALIZER_GROUP", "closedloop-normalizer"),
		EnricherGroup:   e.String("ENRICHER_GROUP", "closedloop-enricher"),
		WarehouseGroup:  e.String("SINK_WAREHOUSE_GROUP", "closedloop-sink-warehouse"),
		WebhookGroup:    e.String("SINK_WEBHOOK_GROUP", "closedloop-sink-webhook"),
		TLSCert:         e.String("ADMIN_TLS_CERT", ""),
		TLSKey:          e.String("ADMIN_TLS_KEY", ""),
		TLSClientCA:     e.String("ADMIN_TLS_CLIENT_CA", ""),
		Instances:       map[string][]string{},
	}
	c.IngressURL = e.String("ADMIN_INGRESS_URL", c.PublicURL)
	for _, kv := range e.List("ADMIN_SERVICES", nil) {
		name, addr, ok := strings.Cut(kv, "=")
		if !ok || name == "" || addr == "" {
			e.Errorf("ADMIN_SERVICES: %q is not service=host:port", kv)
			continue
		}
		c.Instances[name] = append(c.Instances[name], addr)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		e.Errorf("ADMIN_TLS_CERT and ADMIN_TLS_KEY go together")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		e.Errorf("ADMIN_TLS_CLIENT_CA (mTLS) needs ADMIN_TLS_CERT and ADMIN_TLS_KEY")
	}
	// Bearer tokens must not cross a network in clear: without TLS the admin
	// API listens on loopback only, unless plaintext is allowed explicitly
	// (a TLS-terminating proxy in front, or a published port on the host's
	// loopback as in docker-compose).
	if c.TLSCert == "" && !isLoopback(c.Common.GRPCAddr) && !e.Bool("ADMIN_ALLOW_PLAINTEXT", false) {
		e.Errorf("GRPC_ADDR=%s without ADMIN_TLS_CERT/ADMIN_TLS_KEY would take bearer tokens in clear from the network: set the certificate, bind GRPC_ADDR to 127.0.0.1, or set ADMIN_ALLOW_PLAINTEXT=true behind a TLS-terminating proxy", c.Common.GRPCAddr)
	}
	// The admin resolves the pipeline's secrets: the admin tokens (and the
	// sources' signing keys, for signed test events).
	c.Pipeline = service.LoadPipeline(e, os.LookupEnv)
	if c.Pipeline != nil && c.RedisURL == "" {
		for _, src := range c.Pipeline.Current().Sources {
			if src.API != nil && src.API.Reconcile != nil {
				e.Errorf("source %s has api.reconcile: set REDIS_URL to the normalizer's Redis (its dedupe store says which items the pipeline has received)", src.Name)
			}
		}
	}
	if c.Pipeline != nil && len(c.Pipeline.Current().Admin.Tokens) == 0 {
		e.Errorf("PIPELINE_CONFIG has no admin.tokens: nobody could call the admin API (add a viewer and an operator token, as secret references)")
	}
	return c, e.Err()
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c Config) serverCreds() (grpc.ServerOption, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("ADMIN_TLS_CERT/ADMIN_TLS_KEY: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLSClientCA != "" {
		pem, err := os.ReadFile(c.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("ADMIN_TLS_CLIENT_CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("ADMIN_TLS_CLIENT_CA holds no PEM certificate")
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return grpc.Creds(credentials.NewTLS(tc)), nil
}

// stages lists the consumer groups to report on.
func (c Config) stages(t kafkaio.Topics) []api.Stage {
	lagMax := int64(c.MaxLag)
	out := []api.Stage{
		{Name: "normalizer", Service: "normalizer", Group: c.NormalizerGroup, Topics: []string{t.Raw}, MaxLag: lagMax},
		{Name: "enricher", Service: "enricher", Group: c.EnricherGroup, Topics: []string{t.Normalized}, MaxLag: lagMax},
	}
	for _, s := range c.Sinks {
		if s == "sink-warehouse" {
			out = append(out, api.Stage{Name: s, Service: s, Sink: s, Group: c.WarehouseGroup,
				Topics: []string{t.Priority, t.Enriched, t.Replay(s)}, MaxLag: lagMax})
		}
	}
	for _, ep := range c.Pipeline.Current().Sinks.Webhook.Endpoints {
		out = append(out, api.Stage{Name: "sink-webhook/" + ep.Name, Service: "sink-webhook", Sink: "sink-webhook",
			Group: c.WebhookGroup + "-" + ep.Name, Topics: []string{t.Priority, t.Enriched, t.Replay("sink-webhook")}, MaxLag: lagMax})
	}
	return out
}

// Run starts the admin service and blocks until ctx is cancelled.
func Run(ctx context.Context) error {
	cfg, err := Load(config.FromEnviron())
	if err != nil {
		return err
	}
	creds, err := cfg.serverCreds()
	if err != nil {
		return err
	}
	t := cfg.Common.Topics
	cfg.Common.OwnAuth = true // admin.tokens with roles, not the service token
	auth := &api.Auth{Admin: func() *config.Admin { return &cfg.Pipeline.Current().Admin }, Service: "admin", Instance: cfg.Common.Instance,
		Audit: &audit.Writer{Topic: t.Audit()}}
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(auth.Unary), grpc.ChainStreamInterceptor(auth.Stream)}
	if creds != nil {
		opts = append(opts, creds)
	}
	svc, err := service.New(ctx, "admin", cfg.Common, opts...)
	if err != nil {
		return err
	}
	auth.Audit.Log = svc.Log
	sinks := append([]string(nil), cfg.Sinks...)
	// sink-webhook runs the webhook endpoints and every other kind (sinks.slack, ...).
	if len(cfg.Pipeline.Current().Sinks.Webhook.Endpoints) > 0 || len(cfg.Pipeline.Current().Sinks.Kinds) > 0 {
		sinks = append(sinks, "sink-webhook")
	}
	topics := []string{t.Audit()}
	for _, s := range sinks {
		topics = append(topics, t.Replay(s), t.DLQ(s))
	}
	if err := svc.EnsureTopics(ctx, topics...); err != nil {
		return err
	}
	compacted := ingesttokens.TopicSpec(cfg.Common.TopicReplication) // one partition, compacted
	if err := svc.EnsureTopics(ctx, t.Raw, t.Normalized); err != nil {
		return err
	}
	if err := kafkaio.EnsureTopics(ctx, cfg.Common.Brokers, []string{t.IngestTokens, t.DLQState(), t.ReplayJobs(), t.BackfillJobs()}, cfg.Common.CreateTopics, compacted); err != nil {
		return err
	}
	tokens := ingesttokens.NewStore(cfg.Common.Brokers, t.IngestTokens, svc.Log)
	svc.Group.Go("ingest tokens", tokens.Run)
	svc.Status.AddCheck("ingest-tokens", tokens.Check)
	producer := svc.Producer()
	auth.Audit.Producer = producer
	replays := replay.New(cfg.Common.Brokers, t, sinks, producer, svc.Log)
	if err := replays.Load(ctx); err != nil {
		return err
	}
	// Backfills and reconciliation: the normalizer's dedupe store (when
	// REDIS_URL is set) tells them what the pipeline has already seen.
	var seen backfill.Seen
	if cfg.RedisURL != "" {
		ropts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		rdb := redis.NewClient(ropts)
		svc.OnShutdown("redis", time.Second, func(context.Context) error { return rdb.Close() })
		svc.Status.AddCheck("redis", idempotency.Ping(rdb))
		seen = idempotency.New(rdb, idempotency.Options{Prefix: cfg.RedisPrefix + "dedupe:"})
	}
	backfills := backfill.New(backfill.Options{Brokers: cfg.Common.Brokers, Topics: t, Producer: producer, Log: svc.Log,
		Pipeline: cfg.Pipeline.Current, Seen: seen, Lookup: os.LookupEnv, Meter: svc.Tel.Meter("github.com/closedloop/closedloop/services/admin/backfill")})
	if err := backfills.Load(ctx); err != nil {
		return err
	}
	svc.Group.Go("reconcile schedule", backfills.RunSchedule)
	svc.OnShutdown("backfill jobs", 10*time.Second, func(context.Context) error { backfills.Stop(); return nil })
	server := api.New(api.Options{
		Backfills: backfills,
		Pipeline:  cfg.Pipeline.Current, Tokens: tokens, Producer: producer,
		DLQ: dlq.New(cfg.Common.Brokers, t, producer), Replays: replays, Offsets: offsets.New(cfg.Common.Brokers),
		Stages: cfg.stages(t), Instances: cfg.Instances, PublicURL: cfg.PublicURL, Log: svc.Log,
		IngressURL: cfg.IngressURL, Topics: t, Brokers: cfg.Common.Brokers, ServiceCredentials: cfg.Common.ServiceCredentials("admin"),
		DestinationStage: func(service, dest string) (api.Stage, bool) {
			if service != "sink-webhook" {
				return api.Stage{}, false
			}
			return api.Stage{Name: "sink-webhook/" + dest, Service: service, Sink: service, Group: cfg.WebhookGroup + "-" + dest,
				Topics: []string{t.Priority, t.Enriched, t.Replay(service)}, MaxLag: int64(cfg.MaxLag)}, true
		},
	})
	adminv1.RegisterAdminServiceServer(svc.GRPC.GRPC, server)
	adminv1.RegisterBackfillServiceServer(svc.GRPC.GRPC, &api.BackfillServer{Jobs: backfills})
	svc.Group.Go("pipeline gauges", func(ctx context.Context) error {
		return server.RunGauges(ctx, svc.Tel.Meter("github.com/closedloop/closedloop/services/admin"), cfg.GaugeInterval)
	})
	svc.Watch(cfg.Pipeline, func(*config.Pipeline) error { return nil }) // admin tokens and sources follow the file
	svc.OnShutdown("replay jobs", 10*time.Second, func(context.Context) error { replays.Stop(); return nil })
	svc.OnShutdown("service connections", time.Second, func(context.Context) error { server.Close(); return nil })
	svc.CloseProducer(producer)
	svc.Log.Info("admin ready", "tls", cfg.TLSCert != "", "mtls", cfg.TLSClientCA != "", "sinks", sinks,
		"callers", len(cfg.Pipeline.Current().Admin.Tokens), "services", len(cfg.Instances))
	return svc.Run()
}
