// Package service is the composition kit every closedloop service starts
// from: the common environment (broker list, topic prefix, listen
// addresses, log level, OTLP), telemetry, the status registry, the ops HTTP
// server (/metrics, /healthz, /readyz) and the gRPC server (health,
// reflection, admin), all run in one lifecycle.Group with an ordered
// shutdown: servers stop accepting, the service's own steps run (consumers
// drain, producers flush), telemetry flushes last.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"

	"github.com/closedloop/closedloop/libs/audit"
	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/grpcserver"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/libs/status"
	"github.com/closedloop/closedloop/libs/telemetry"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// Version is the build version, set with -ldflags "-X github.com/closedloop/closedloop/libs/service.Version=v1.2.3".
var Version = "dev"

// Common is the configuration every service reads from the environment.
type Common struct {
	// Brokers (KAFKA_BROKERS, required): comma-separated host:port list.
	Brokers []string
	// Kafka is the brokers' TLS and SASL (KAFKA_TLS_*, KAFKA_SASL_*;
	// kafkaio.LoadSecurity), used by every Kafka client of the process.
	Kafka kafkaio.Security
	// Topics are the pipeline topic names, with CLOSEDLOOP_TOPIC_PREFIX in
	// front; the lanes can be renamed with TOPIC_ENRICHED and TOPIC_PRIORITY
	// (set both on the enricher and the sinks).
	Topics kafkaio.Topics
	// CreateTopics (KAFKA_CREATE_TOPICS, default false) creates missing topics at start-up.
	CreateTopics bool
	// TopicPartitions (KAFKA_TOPIC_PARTITIONS, default 3) and
	// TopicReplication (KAFKA_TOPIC_REPLICATION, default 1) apply to created topics.
	TopicPartitions, TopicReplication int
	// OpsAddr (OPS_ADDR) serves /metrics, /healthz and /readyz; bind it to
	// 127.0.0.1 when nothing outside the host scrapes or probes it.
	OpsAddr string
	// Pprof (OPS_PPROF, default false) serves /debug/pprof on the ops port.
	Pprof bool
	// GRPCAddr (GRPC_ADDR) serves gRPC health, reflection and the admin API.
	GRPCAddr string
	// LogLevel (LOG_LEVEL, default info).
	LogLevel string
	// Instance (INSTANCE_ID, default host name) names this replica.
	Instance string
	// ShutdownTimeout (SHUTDOWN_TIMEOUT, default 20s) bounds the whole shutdown.
	ShutdownTimeout time.Duration
	// ServiceTokens (CLOSEDLOOP_SERVICE_TOKEN, required; comma-separated
	// during a rotation, the first one is sent) authenticate the calls on
	// every service's gRPC port; the admin sends the first one.
	ServiceTokens []string
	// OwnAuth is set by a service that authenticates its gRPC callers itself
	// (the admin: admin.tokens) instead of with the service token.
	OwnAuth bool
	// MaxMessageBytes (KAFKA_MAX_MESSAGE_BYTES, default: read from the
	// brokers) is the record size limit of the service's producers. By
	// default it is the smallest max.message.bytes of the topics the service
	// ensured; set lower, it is used instead; set higher, start-up fails.
	MaxMessageBytes int
	// SessionTimeout (CONSUMER_SESSION_TIMEOUT, default 10s) is how long the
	// group waits for a silent consumer before giving its partitions to
	// another: the pause after a crash. Brokers refuse less than their
	// group.min.session.timeout.ms (6s by default).
	SessionTimeout time.Duration
	// ConsumerWorkers (CONSUMER_WORKERS) is how many workers handle each
	// consumed topic: partition p is worker p mod N's, and a worker's batch
	// takes the waiting records of all its partitions
	// (kafkaio.ConsumerConfig.Workers). 0 is one worker per partition;
	// unset (-1), the service's Service.Workers.
	ConsumerWorkers int
	// ConsumerLinger (CONSUMER_LINGER) is how long the broker may hold a
	// consumer's fetch for more records while they keep coming
	// (kafkaio.ConsumerConfig.Linger); unset (-1), the service's
	// Service.Linger.
	ConsumerLinger time.Duration
	// ConsumerLingerRecords (CONSUMER_LINGER_RECORDS, default 16) is the
	// batch a lingering fetch waits for before its linger has passed
	// (kafkaio.ConsumerConfig.LingerRecords).
	ConsumerLingerRecords int
	// ConsumerLingerSpan (CONSUMER_LINGER_SPAN, default 16 ms; 0: none)
	// makes a lingering fetch wait for the records that arrive in it at the
	// recent rate when they are more than ConsumerLingerRecords
	// (kafkaio.ConsumerConfig.LingerSpan): at 16 records per 16 ms the two
	// meet at 1,000 records/s, and above it the batches grow with the rate
	// instead of the wait shrinking.
	ConsumerLingerSpan time.Duration
	// ConsumerBufferBytes (CONSUMER_BUFFER_BYTES, default 8 MiB) bounds the
	// fetched records the service's consumers hold at once, waiting or in a
	// handler call, split evenly among them (Service.Consumers;
	// kafkaio.ConsumerConfig.BufferBytes).
	ConsumerBufferBytes int
}

// MinServiceTokenLength is the shortest service token accepted.
const MinServiceTokenLength = 32

// ServiceCredentials are the per-call credentials for calling other
// services' gRPC ports (the first service token).
func (c Common) ServiceCredentials(service string) grpcserver.ServiceCredentials {
	var tok string
	if len(c.ServiceTokens) > 0 {
		tok = c.ServiceTokens[0]
	}
	return grpcserver.ServiceCredentials{Token: tok, Service: service}
}

// LoadCommon reads Common; opsPort and grpcPort are the service's default ports.
func LoadCommon(e *config.Env, opsPort, grpcPort int) Common {
	host, _ := os.Hostname()
	c := Common{
		Brokers:               e.List("KAFKA_BROKERS", nil),
		Kafka:                 kafkaio.LoadSecurity(e),
		Topics:                kafkaio.NewTopics(e.String("CLOSEDLOOP_TOPIC_PREFIX", "")),
		CreateTopics:          e.Bool("KAFKA_CREATE_TOPICS", false),
		TopicPartitions:       e.Int("KAFKA_TOPIC_PARTITIONS", 3),
		TopicReplication:      e.Int("KAFKA_TOPIC_REPLICATION", 1),
		OpsAddr:               e.String("OPS_ADDR", ":"+strconv.Itoa(opsPort)),
		Pprof:                 e.Bool("OPS_PPROF", false),
		GRPCAddr:              e.String("GRPC_ADDR", ":"+strconv.Itoa(grpcPort)),
		LogLevel:              e.String("LOG_LEVEL", "info"),
		Instance:              e.String("INSTANCE_ID", host),
		ShutdownTimeout:       e.Duration("SHUTDOWN_TIMEOUT", 20*time.Second),
		SessionTimeout:        e.Duration("CONSUMER_SESSION_TIMEOUT", 10*time.Second),
		ConsumerWorkers:       e.Int("CONSUMER_WORKERS", -1),
		ConsumerLinger:        e.Duration("CONSUMER_LINGER", -1),
		ConsumerLingerRecords: e.Int("CONSUMER_LINGER_RECORDS", 16),
		ConsumerLingerSpan:    e.Duration("CONSUMER_LINGER_SPAN", 16*time.Millisecond),
		ConsumerBufferBytes:   e.Int("CONSUMER_BUFFER_BYTES", kafkaio.DefaultBufferBytes),
		MaxMessageBytes:       e.Int("KAFKA_MAX_MESSAGE_BYTES", 0),
		ServiceTokens:         e.List("CLOSEDLOOP_SERVICE_TOKEN", nil),
	}
	if len(c.ServiceTokens) == 0 {
		e.Errorf("CLOSEDLOOP_SERVICE_TOKEN is not set: every gRPC port requires it (the same random value, at least %d characters, on the admin and every service; e.g. openssl rand -hex 32)", MinServiceTokenLength)
	}
	for i, tok := range c.ServiceTokens {
		if len(tok) < MinServiceTokenLength {
			e.Errorf("CLOSEDLOOP_SERVICE_TOKEN: token %d has %d characters; at least %d are required (e.g. openssl rand -hex 32)", i+1, len(tok), MinServiceTokenLength)
		}
	}
	if c.ConsumerBufferBytes < 64<<10 {
		e.Errorf("CONSUMER_BUFFER_BYTES=%d is too small (at least 65536; default %d)", c.ConsumerBufferBytes, kafkaio.DefaultBufferBytes)
	}
	if c.ConsumerLingerRecords < 1 {
		e.Errorf("CONSUMER_LINGER_RECORDS=%d must be at least 1 (default 16)", c.ConsumerLingerRecords)
	}
	if c.ConsumerLingerSpan < 0 {
		e.Errorf("CONSUMER_LINGER_SPAN=%s must not be negative (default 16ms; 0: batches of CONSUMER_LINGER_RECORDS at any rate)", c.ConsumerLingerSpan)
	}
	if c.MaxMessageBytes != 0 && c.MaxMessageBytes < 4096 {
		e.Errorf("KAFKA_MAX_MESSAGE_BYTES=%d is too small (at least 4096; unset, it is read from the topics)", c.MaxMessageBytes)
	}
	prefix := e.String("CLOSEDLOOP_TOPIC_PREFIX", "")
	if v := e.String("TOPIC_ENRICHED", ""); v != "" {
		c.Topics.Enriched = prefix + v
	}
	if v := e.String("TOPIC_PRIORITY", ""); v != "" {
		c.Topics.Priority = prefix + v
	}
	if c.Topics.Enriched == c.Topics.Priority {
		e.Errorf("TOPIC_ENRICHED and TOPIC_PRIORITY name the same topic %q: the lanes must differ", c.Topics.Enriched)
	}
	if len(c.Brokers) == 0 {
		e.Errorf("KAFKA_BROKERS is not set: it must list the Kafka brokers as host:port,host:port")
	}
	for _, a := range []struct{ name, v string }{{"OPS_ADDR", c.OpsAddr}, {"GRPC_ADDR", c.GRPCAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			e.Errorf("%s=%q is not host:port (use :8080 for every interface)", a.name, a.v)
		}
	}
	return c
}

// Service is a started service skeleton.
type Service struct {
	Name   string
	Common Common
	Log    *slog.Logger
	Tel    *telemetry.Telemetry
	Status *status.Registry
	Group  *lifecycle.Group
	GRPC   *grpcserver.Server
	// OpsMux is the ops HTTP server's mux; services may add handlers before Run.
	OpsMux *http.ServeMux
	// Workers is the service's default for CONSUMER_WORKERS (0: one worker
	// per partition); BatchingStage sets it and Linger.
	Workers int
	// Linger is the service's default for CONSUMER_LINGER (0: none).
	Linger time.Duration
	// Consumers is how many consumers the service runs (0 counts as 1): each
	// holds at most CONSUMER_BUFFER_BYTES / Consumers of fetched records
	// (at least 1 MiB), so that the service's record memory is bounded by
	// the setting however many destinations it serves. A sink service sets
	// it to its destinations (sink.Host).
	Consumers int
	// Audit writes the audit topic (nil for a service with its own auth,
	// the admin, which audits through its own writer).
	Audit *audit.Writer

	opsLis net.Listener
	// steps run after the servers stopped and before telemetry flushes.
	steps []lifecycle.Step
	// closers run after every step: clients the steps may still use.
	closers []lifecycle.Step
	// consumers are the ones Consume and ConsumeBatch started.
	consumers []*kafkaio.Consumer
	// maxMessageBytes is the smallest record limit of the ensured topics.
	maxMessageBytes int
}

// New sets up telemetry and binds the ops and gRPC listeners (so a port
// conflict fails start-up at once). Call Run to serve. grpcOpts are added
// to the gRPC server's (credentials, interceptors of the admin service).
func New(ctx context.Context, name string, c Common, grpcOpts ...grpc.ServerOption) (*Service, error) {
	if _, set := os.LookupEnv("GOGC"); !set {
		// Every stage allocates its records and frees them milliseconds
		// later: at Go's default (100) the collector was a quarter of the
		// ingress's and normalizer's CPU. A higher target cut their CPU per
		// event by 15–25 % (docs/benchmarks.md) for more heap; GOMEMLIMIT
		// (the chart and compose set 80 % of the memory limit) still bounds
		// it, and GOGC=100 trades the CPU back for memory.
		debug.SetGCPercent(GCPercent(name))
	}
	tel, err := telemetry.Setup(ctx, telemetry.Options{Service: name, Version: Version, Instance: c.Instance, LogLevel: c.LogLevel})
	if err != nil {
		return nil, err
	}
	s := &Service{Name: name, Common: c, Log: tel.Logger, Tel: tel, OpsMux: http.NewServeMux()}
	kafkaio.UseSecurity(c.Kafka)
	s.Log.Info("kafka", "brokers", strings.Join(c.Brokers, ","), "security", c.Kafka.Desc)
	s.Status = status.NewRegistry(name, Version, c.Instance)
	s.Status.AddCheck("kafka", kafkaio.Ping(c.Brokers))
	s.Status.Mount(s.OpsMux)
	s.OpsMux.Handle("GET /metrics", tel.MetricsHandler())
	// Profiles only when enabled (OPS_PPROF=true), on the ops port (never the
	// public one): go tool pprof http://<ops>/debug/pprof/profile
	if c.Pprof {
		s.OpsMux.HandleFunc("/debug/pprof/", pprof.Index)
		s.OpsMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.OpsMux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.opsLis, err = net.Listen("tcp", c.OpsAddr)
	if err != nil {
		return nil, fmt.Errorf("ops listen on %s (OPS_ADDR): %w", c.OpsAddr, err)
	}
	if !c.OwnAuth {
		// Every call needs the service token; every mutation is audited
		// before it runs, on the audit topic, through a producer of its own.
		ap := kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: c.Brokers, ClientID: name + "-" + c.Instance + "-audit"})
		s.closers = append(s.closers, lifecycle.Step{Name: "audit producer", Timeout: 2 * time.Second, Fn: func(context.Context) error { return ap.Close() }})
		s.Audit = &audit.Writer{Producer: ap, Topic: c.Topics.Audit(), Log: s.Log}
		guard := &grpcserver.Guard{Tokens: c.ServiceTokens, Service: name, Instance: c.Instance, Audit: s.Audit}
		grpcOpts = append(guard.ServerOptions(), grpcOpts...)
	}
	s.GRPC, err = grpcserver.New(c.GRPCAddr, s.Log, s.Status, grpcOpts...)
	if err != nil {
		_ = s.opsLis.Close()
		return nil, fmt.Errorf("%w (GRPC_ADDR)", err)
	}
	s.Group = lifecycle.NewGroup(ctx, s.Log)
	return s, nil
}

// EnsureTopics checks (or, with KAFKA_CREATE_TOPICS, creates) the topics the
// service reads and writes, failing start-up with an actionable message.
// It also reads the topics' max.message.bytes: the service's producers never
// write a record larger than the smallest of them (MaxMessageBytes).
func (s *Service) EnsureTopics(ctx context.Context, topics ...string) error {
	ensure := topics
	if !slices.Contains(topics, s.Common.Topics.Audit()) {
		// Every service audits the mutations on its gRPC port (through a
		// producer of its own: the audit topic's limit is not the service's).
		ensure = append(topics[:len(topics):len(topics)], s.Common.Topics.Audit())
	}
	if err := kafkaio.EnsureTopics(ctx, s.Common.Brokers, ensure, s.Common.CreateTopics,
		kafkaio.TopicSpec{Partitions: s.Common.TopicPartitions, ReplicationFactor: s.Common.TopicReplication,
			Defs: s.Common.Topics.Defs(kafkaio.SinkServices...)}); err != nil {
		return err
	}
	return s.LearnMessageLimit(ctx, topics...)
}

// LearnMessageLimit lowers MaxMessageBytes to the smallest max.message.bytes
// of topics, as the brokers report it, checked against KAFKA_MAX_MESSAGE_BYTES.
func (s *Service) LearnMessageLimit(ctx context.Context, topics ...string) error {
	limits, err := kafkaio.TopicMaxMessageBytes(ctx, s.Common.Brokers, topics...)
	conf := s.Common.MaxMessageBytes
	least, leastTopic := 0, ""
	for t, n := range limits {
		if least == 0 || n < least {
			least, leastTopic = n, t
		}
	}
	switch {
	case err != nil && conf == 0:
		return fmt.Errorf("reading max.message.bytes of the topics: %w (allow DescribeConfigs on them, or set KAFKA_MAX_MESSAGE_BYTES to their smallest max.message.bytes)", err)
	case err != nil:
		s.Log.Warn("max.message.bytes of the topics not readable; using KAFKA_MAX_MESSAGE_BYTES", "bytes", conf, "error", err.Error())
		least = conf
	case conf > least:
		return fmt.Errorf("KAFKA_MAX_MESSAGE_BYTES=%d is larger than topic %s accepts (max.message.bytes=%d): lower it, or raise the topic's max.message.bytes", conf, leastTopic, least)
	case conf > 0:
		least = conf
	}
	if s.maxMessageBytes == 0 || least < s.maxMessageBytes {
		s.maxMessageBytes = least
	}
	return nil
}

// MaxMessageBytes is the record size limit of the service's producers: the
// smallest max.message.bytes of the topics it ensured (or
// kafkaio.DefaultMaxMessageBytes before any).
func (s *Service) MaxMessageBytes() int {
	if s.maxMessageBytes == 0 {
		return kafkaio.DefaultMaxMessageBytes
	}
	return s.maxMessageBytes
}

// Producer builds a producer on the service's brokers.
func (s *Service) Producer() *kafkaio.Producer {
	return kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: s.Common.Brokers, ClientID: s.Name + "-" + s.Common.Instance,
		MaxMessageBytes: s.MaxMessageBytes()})
}

// OnShutdown adds a step that runs after the servers stopped accepting, in
// the order added (drain consumers before flushing the producers they use).
func (s *Service) OnShutdown(name string, timeout time.Duration, fn func(ctx context.Context) error) {
	s.steps = append(s.steps, lifecycle.Step{Name: name, Timeout: timeout, Fn: fn})
}

// Run serves the ops HTTP and gRPC servers beside the parts already added to
// Group, and returns after the ordered shutdown.
func (s *Service) Run() error {
	ops := &http.Server{Handler: s.OpsMux, ReadHeaderTimeout: 5 * time.Second}
	s.Group.Go("ops http", func(ctx context.Context) error {
		s.Log.Info("ops HTTP listening", "addr", s.opsLis.Addr().String())
		err := ops.Serve(s.opsLis)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	s.Group.Go("grpc", func(ctx context.Context) error { return s.GRPC.Serve(ctx, 5*time.Second) })
	s.Group.OnShutdown("ops http", 2*time.Second, ops.Shutdown)
	for _, st := range append(s.steps, s.closers...) {
		s.Group.OnShutdown(st.Name, st.Timeout, st.Fn)
	}
	s.Group.OnShutdown("telemetry", 5*time.Second, s.Tel.Shutdown)
	s.Log.Info("service started", "version", Version, "instance", s.Common.Instance)
	return s.Group.Wait()
}

// OpsAddr is the bound ops address (useful when OPS_ADDR had port 0).
func (s *Service) OpsAddr() string { return s.opsLis.Addr().String() }

// Consume builds a consumer of topics in group, quarantining to the
// pipeline's quarantine topic through producer, and runs it in the group;
// at shutdown it is drained (in-flight records finish and their offsets are
// committed) before later steps such as closing producer.
func (s *Service) Consume(group string, topics []string, producer *kafkaio.Producer, h kafkaio.Handler) error {
	c, err := kafkaio.NewConsumer(s.consumerConfig(group, topics, producer), h)
	if err != nil {
		return err
	}
	s.runConsumer(group, c)
	return nil
}

// ConsumeBatch is Consume with a handler that takes each partition's
// waiting records together (up to maxBatch; 0 means the default, 500).
func (s *Service) ConsumeBatch(group string, topics []string, producer *kafkaio.Producer, maxBatch int, h kafkaio.BatchHandler, opts ...ConsumerOption) error {
	cfg := s.consumerConfig(group, topics, producer)
	cfg.MaxBatch = maxBatch
	for _, o := range opts {
		o(&cfg)
	}
	c, err := kafkaio.NewBatchConsumer(cfg, h)
	if err != nil {
		return err
	}
	s.runConsumer(group, c)
	return nil
}

// ConsumerOption adjusts a consumer's configuration beyond the service's
// settings.
type ConsumerOption func(*kafkaio.ConsumerConfig)

// GatherTopics is for a handler that takes batches of several topics
// (kafkaio.ConsumerConfig.GatherTopics): a sink's lanes.
func GatherTopics(c *kafkaio.ConsumerConfig) { c.GatherTopics = true }

// workers is CONSUMER_WORKERS, else the service's default.
func (s *Service) workers() int {
	if s.Common.ConsumerWorkers >= 0 {
		return s.Common.ConsumerWorkers
	}
	return s.Workers
}

// bufferBytes is one consumer's share of CONSUMER_BUFFER_BYTES.
func (s *Service) bufferBytes() int {
	return max(1<<20, s.Common.ConsumerBufferBytes/max(1, s.Consumers))
}

// linger is CONSUMER_LINGER, else the service's default.
func (s *Service) linger() time.Duration {
	if s.Common.ConsumerLinger >= 0 {
		return s.Common.ConsumerLinger
	}
	return s.Linger
}

func (s *Service) consumerConfig(group string, topics []string, producer *kafkaio.Producer) kafkaio.ConsumerConfig {
	return kafkaio.ConsumerConfig{
		Brokers: s.Common.Brokers, GroupID: group, Topics: topics,
		Quarantine: producer, QuarantineTopic: s.Common.Topics.Quarantine, Log: s.Log, Status: s.Status,
		SessionTimeout: s.Common.SessionTimeout, Workers: s.workers(), Linger: s.linger(),
		LingerRecords: s.Common.ConsumerLingerRecords, LingerSpan: s.Common.ConsumerLingerSpan,
		BufferBytes: s.bufferBytes(),
	}
}

// PausableConsumers lets operators pause and resume this service's
// consumers through the admin API (PauseDestination with the service's
// name), and shows their pause in GetStatus. Sink services expose their
// destinations instead (package sink).
func (s *Service) PausableConsumers() {
	for _, c := range s.consumers {
		s.Status.AddDestination(consumerValve{c: c, service: s.Name})
	}
}

// consumerValve is a consumer as a status.Destination.
type consumerValve struct {
	c       *kafkaio.Consumer
	service string
}

func (v consumerValve) Name() string { return v.service }

func (v consumerValve) Status() *adminv1.DestinationStatus {
	why, paused := v.c.Paused()
	return &adminv1.DestinationStatus{Name: v.service, Sink: v.service, Paused: paused, PauseReason: why}
}
func (v consumerValve) Pause(reason string) {
	v.c.Pause(reason)
}
func (v consumerValve) Resume() { v.c.Resume() }

func (s *Service) runConsumer(group string, c *kafkaio.Consumer) {
	s.consumers = append(s.consumers, c)
	done := make(chan struct{})
	s.Group.Go("consumer "+group, func(ctx context.Context) error {
		defer close(done)
		return c.Run(ctx)
	})
	s.OnShutdown("consumer drain "+group, 15*time.Second, func(ctx context.Context) error {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// GCPercent is a service's GOGC when the environment sets none: 300; 150
// for the ingress, whose peak RSS at 64 busy connections stays under 48 MiB
// with it (43–47 MiB; 46–49 at 200, with no measurable CPU between them
// in make bench-ingress); Go's 100 for sink-webhook, the largest heap
// (its peak RSS with every destination at 1,000 events/s went from ~225 to
// 327 MiB at 300).
func GCPercent(service string) int {
	switch service {
	case "ingress":
		return 150
	case "sink-webhook":
		return 100
	}
	return 300
}

// Batcher builds a natural-batching producer (kafkaio.Batcher) for a
// service whose many concurrent callers each wait for their record.
func (s *Service) Batcher() *kafkaio.Batcher {
	return kafkaio.NewBatcher(kafkaio.BatcherConfig{Brokers: s.Common.Brokers, ClientID: s.Name + "-" + s.Common.Instance,
		MaxMessageBytes: s.MaxMessageBytes()})
}

// CloseProducer adds the step that flushes and closes producer; add it after
// the consumers that use it.
func (s *Service) CloseProducer(p interface{ Close() error }) {
	s.OnShutdown("kafka producer", 5*time.Second, func(context.Context) error { return p.Close() })
}

// LoadPipeline reads the pipeline file named by PIPELINE_CONFIG (required),
// recording problems in e. lookup resolves secret references; a service that
// does not verify webhooks passes nil and never holds the secrets.
func LoadPipeline(e *config.Env, lookup func(string) (string, bool)) *Pipeline {
	path := e.Required("PIPELINE_CONFIG", "the pipeline YAML file (sources and sinks)")
	interval := e.Duration("PIPELINE_RELOAD_INTERVAL", time.Second)
	if path == "" {
		return nil
	}
	p, err := config.LoadPipeline(path, lookup)
	if err != nil {
		e.Errorf("%v", err)
		return nil
	}
	out := &Pipeline{Path: path, Interval: interval, lookup: lookup}
	out.cur.Store(p)
	return out
}

// Pipeline is the pipeline file of a service, reloaded on change.
type Pipeline struct {
	// Path is PIPELINE_CONFIG; Interval (PIPELINE_RELOAD_INTERVAL, default
	// 1s) is how often it is checked for changes.
	Path     string
	Interval time.Duration
	lookup   func(string) (string, bool)
	cur      atomic.Pointer[config.Pipeline]
}

// Current is the pipeline in force.
func (p *Pipeline) Current() *config.Pipeline { return p.cur.Load() }

// Watch runs in the service's group: every change of the file (or of a
// secret file it references) that loads and that apply accepts replaces the
// pipeline; a change that does not is logged and the old pipeline stays.
func (s *Service) Watch(p *Pipeline, apply func(*config.Pipeline) error) {
	reloads, _ := s.Tel.Meter("github.com/closedloop/closedloop/libs/service").Int64Counter("closedloop.pipeline.reloads", metric.WithUnit("{reload}"),
		metric.WithDescription("Pipeline file reloads by result (applied, rejected)."))
	s.Group.Go("pipeline watch", func(ctx context.Context) error {
		config.Watch(ctx, p.Path, p.Interval, p.lookup, func(np *config.Pipeline) {
			if err := apply(np); err != nil {
				reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "rejected")))
				s.Log.Error("pipeline change rejected; the previous pipeline stays in force", "path", p.Path, "error", err.Error())
				return
			}
			p.cur.Store(np)
			reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "applied")))
			s.Log.Info("pipeline reloaded", "path", p.Path, "sources", len(np.Sources))
		}, func(err error) {
			reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "rejected")))
			s.Log.Error("pipeline file does not load; the previous pipeline stays in force", "path", p.Path, "error", err.Error())
		})
		return ctx.Err()
	})
}

// Redis connects to the Redis server at url (redis://host:6379/0), waiting
// up to 15 s for it to answer (it may start after the service), and closes
// the client at shutdown, after every other step (the consumers that use it
// have stopped by then).
func (s *Service) Redis(ctx context.Context, url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	rdb := redis.NewClient(opts)
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("redis at %s is not reachable: %w (check REDIS_URL)", opts.Addr, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	s.closers = append(s.closers, lifecycle.Step{Name: "redis", Timeout: time.Second, Fn: func(context.Context) error { return rdb.Close() }})
	return rdb, nil
}

// BatchingStage sets the consumer defaults of a stage that handles records
// in batches (CONSUMER_WORKERS and CONSUMER_LINGER override them): a worker
// per Go processor, at least two (CoreWorkers), each serving several
// partitions so that batches grow with the stage's rate, and a fetch that
// lingers at the broker while records keep coming. At 1,000 events/s a
// fetch answered at once carries one record: lingering fetches of 10 ms
// (the normalizer and enricher) and 20 ms (sink-warehouse) took their
// fetches from ~750, ~210 and ~210 per second to ~85, ~90 and ~45, and the
// services' CPU per event down by about a sixth, for ~8 ms more
// webhook→row p50 (docs/benchmarks.md, fifth pass). All three now linger
// up to 100 ms for 16 records (CONSUMER_LINGER_RECORDS): the batch target
// ends the wait at 1,000/s (p99 unchanged), and at 100/s the linger brings
// ten records to a batch. 50 ms (five records) cut the three stages' CPU
// per event at 100/s by about 60 % for ~50 ms per stage of latency (sixth
// pass); 100 ms cut it by another ~30 % (the services 747–913 µs per
// event instead of 840–1,087) for webhook→row p50 59–69 ms and p99 110–135
// ms at that rate instead of 34–66 and 61–103 (ninth pass). Below two
// records per linger (20/s) nothing waits. Above 1,000/s a batch is what
// arrives in 16 ms (CONSUMER_LINGER_SPAN) rather than 16 records: on two
// cores the 20,000-webhook drain went from 4,250–5,992 to 5,020–6,713
// events/s in interleaved runs (fifteenth pass).
func (s *Service) BatchingStage(linger time.Duration) {
	s.Workers, s.Linger = CoreWorkers(), linger
}

// CoreWorkers is the consumer workers a batching stage runs by default: one
// per Go processor, and at least two, so that one worker's CPU work overlaps
// another's wait on Redis, Kafka or PostgreSQL. With GOMAXPROCS=1 (the
// chart's default for a request of up to one CPU) a single worker left the
// core idle during each round trip: the normalizer made 12.5k records/s
// with one worker and 15–21k with two (docs/benchmarks.md).
func CoreWorkers() int { return max(2, runtime.GOMAXPROCS(0)) }
