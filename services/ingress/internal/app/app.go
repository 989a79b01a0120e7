// Package app is the ingress composition root: configuration, wiring, run.
package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/ingesttokens"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/service"
	"github.com/closedloop/closedloop/services/ingress/internal/ingest"
)

// Config is the ingress configuration.
type Config struct {
	Common service.Common
	// Addr (INGRESS_ADDR, default :8080) is the public webhook listener.
	Addr string
	// Pipeline is read from PIPELINE_CONFIG (required) and reloaded on change.
	Pipeline *service.Pipeline
	// MaxBody (INGRESS_MAX_BODY_BYTES, default: what the raw topic can store,
	// its max.message.bytes less EnvelopeReserve). Set higher than that, the
	// ingress does not start.
	MaxBody int
	// ProduceTimeout (INGRESS_PRODUCE_TIMEOUT, default 3s).
	ProduceTimeout time.Duration
	// MaxInFlight (INGRESS_MAX_IN_FLIGHT, default 1024): requests handled at
	// once; more get 503 + Retry-After.
	MaxInFlight int
	// SourceMaxInFlight (INGRESS_SOURCE_MAX_IN_FLIGHT, default 256): one
	// source's share; more get 429 + Retry-After.
	SourceMaxInFlight int
	// MaxBodyMemory (INGRESS_MAX_BODY_MEMORY_BYTES, default 64 MiB) and
	// SourceMaxBodyMemory (INGRESS_SOURCE_MAX_BODY_MEMORY_BYTES, default 16
	// MiB): body memory held at once, in total and per source (each body
	// counts twice: the body and its record).
	MaxBodyMemory, SourceMaxBodyMemory int64
	// UnverifiedPerSecond (INGRESS_UNVERIFIED_PER_SECOND, default 5) and
	// UnverifiedBurst (INGRESS_UNVERIFIED_BURST, default 20): requests per
	// source that fail verification before they get 429.
	UnverifiedPerSecond float64
	UnverifiedBurst     int
}

// EnvelopeReserve is what a raw record needs besides the body: the
// RawWebhook's other fields (ids, source, kept headers of at most 256 bytes
// each), the record's key and trace headers, and the batch framing.
const EnvelopeReserve = 8 << 10

// Load reads and validates the configuration.
func Load(e *config.Env, lookup func(string) (string, bool)) (Config, error) {
	c := Config{
		Common:              service.LoadCommon(e, 8081, 9191),
		Addr:                e.String("INGRESS_ADDR", ":8080"),
		MaxBody:             e.Int("INGRESS_MAX_BODY_BYTES", 0),
		ProduceTimeout:      e.Duration("INGRESS_PRODUCE_TIMEOUT", 3*time.Second),
		MaxInFlight:         e.Int("INGRESS_MAX_IN_FLIGHT", 1024),
		SourceMaxInFlight:   e.Int("INGRESS_SOURCE_MAX_IN_FLIGHT", 256),
		MaxBodyMemory:       int64(e.Int("INGRESS_MAX_BODY_MEMORY_BYTES", 64<<20)),
		SourceMaxBodyMemory: int64(e.Int("INGRESS_SOURCE_MAX_BODY_MEMORY_BYTES", 16<<20)),
		UnverifiedPerSecond: e.Float("INGRESS_UNVERIFIED_PER_SECOND", 5),
		UnverifiedBurst:     e.Int("INGRESS_UNVERIFIED_BURST", 20),
	}
	if c.MaxInFlight < 1 || c.SourceMaxInFlight < 1 {
		e.Errorf("INGRESS_MAX_IN_FLIGHT=%d and INGRESS_SOURCE_MAX_IN_FLIGHT=%d must be at least 1", c.MaxInFlight, c.SourceMaxInFlight)
	}
	if c.MaxBody != 0 && c.MaxBody < 1024 {
		e.Errorf("INGRESS_MAX_BODY_BYTES=%d is too small (at least 1024; unset, it is computed from the raw topic)", c.MaxBody)
	}
	if c.SourceMaxInFlight > c.MaxInFlight {
		e.Errorf("INGRESS_SOURCE_MAX_IN_FLIGHT=%d is more than INGRESS_MAX_IN_FLIGHT=%d: a source's share cannot exceed the total", c.SourceMaxInFlight, c.MaxInFlight)
	}
	if c.SourceMaxBodyMemory > c.MaxBodyMemory {
		e.Errorf("INGRESS_SOURCE_MAX_BODY_MEMORY_BYTES=%d is more than INGRESS_MAX_BODY_MEMORY_BYTES=%d: a source's share cannot exceed the total", c.SourceMaxBodyMemory, c.MaxBodyMemory)
	}
	if c.UnverifiedPerSecond <= 0 || c.UnverifiedBurst < 1 {
		e.Errorf("INGRESS_UNVERIFIED_PER_SECOND and INGRESS_UNVERIFIED_BURST must be positive")
	}
	if c.ProduceTimeout > 4*time.Second {
		e.Errorf("INGRESS_PRODUCE_TIMEOUT=%s must stay under the providers' 5s answer deadline", c.ProduceTimeout)
	}
	c.Pipeline = service.LoadPipeline(e, lookup)
	return c, e.Err()
}

// bodyLimit is the largest body the raw topic can store (its max.message.bytes
// less EnvelopeReserve), or INGRESS_MAX_BODY_BYTES when that is set and fits.
func (c Config) bodyLimit(rawMax int) (int, error) {
	fits := rawMax - EnvelopeReserve
	if fits < 1024 {
		return 0, fmt.Errorf("the raw topic %s accepts records of only %d bytes (max.message.bytes): raise it", c.Common.Topics.Raw, rawMax)
	}
	if c.MaxBody == 0 {
		return fits, nil
	}
	if c.MaxBody > fits {
		return 0, fmt.Errorf("INGRESS_MAX_BODY_BYTES=%d cannot be stored: the raw topic %s accepts records of %d bytes (max.message.bytes), which leaves %d for a body; lower INGRESS_MAX_BODY_BYTES or raise the topic's max.message.bytes",
			c.MaxBody, c.Common.Topics.Raw, rawMax, fits)
	}
	return c.MaxBody, nil
}

// Run starts the ingress and blocks until ctx is cancelled.
func Run(ctx context.Context) error {
	cfg, err := Load(config.FromEnviron(), os.LookupEnv)
	if err != nil {
		return err
	}
	svc, err := service.New(ctx, "ingress", cfg.Common)
	if err != nil {
		return err
	}
	if err := svc.EnsureTopics(ctx, cfg.Common.Topics.Raw); err != nil {
		return err
	}
	maxBody, err := cfg.bodyLimit(svc.MaxMessageBytes())
	if err != nil {
		return err
	}
	if 2*int64(maxBody) > cfg.SourceMaxBodyMemory {
		return fmt.Errorf("INGRESS_SOURCE_MAX_BODY_MEMORY_BYTES=%d cannot hold one body of %d bytes (each counts twice): raise it to at least %d", cfg.SourceMaxBodyMemory, maxBody, 2*maxBody)
	}
	tokensTopic := cfg.Common.Topics.IngestTokens
	if err := kafkaio.EnsureTopics(ctx, cfg.Common.Brokers, []string{tokensTopic}, cfg.Common.CreateTopics,
		ingesttokens.TopicSpec(cfg.Common.TopicReplication)); err != nil {
		return err
	}
	tokens := ingesttokens.NewStore(cfg.Common.Brokers, tokensTopic, svc.Log)
	svc.Group.Go("ingest tokens", tokens.Run)
	svc.Status.AddCheck("ingest-tokens", tokens.Check)
	// One record per request, many requests at once: batch them naturally.
	producer := svc.Batcher()
	h, err := ingest.New(ingest.Options{
		Pipeline: cfg.Pipeline.Current(), Producer: producer, Tokens: ingest.AnyTokens{Issued: tokens}, RawTopic: cfg.Common.Topics.Raw,
		MaxBody: int64(maxBody), ProduceTimeout: cfg.ProduceTimeout, MaxInFlight: cfg.MaxInFlight, Instance: cfg.Common.Instance, Log: svc.Log,
		SourceMaxInFlight: cfg.SourceMaxInFlight, MaxBodyMemory: cfg.MaxBodyMemory, SourceMaxBodyMemory: cfg.SourceMaxBodyMemory,
		UnverifiedPerSecond: cfg.UnverifiedPerSecond, UnverifiedBurst: cfg.UnverifiedBurst,
	})
	if err != nil {
		return err
	}
	svc.Watch(cfg.Pipeline, h.Reload)
	svc.Status.AddReport(func(_ context.Context, resp *adminv1.GetStatusResponse) { resp.Sources = h.Traffic() })
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (INGRESS_ADDR): %w", cfg.Addr, err)
	}
	srv := h.Server(ingest.ServerOptions{}) // the defaults: docs/architecture.md, "ingress"
	svc.Group.Go("webhook http", func(context.Context) error {
		svc.Log.Info("webhooks listening", "addr", lis.Addr().String(), "sources", len(cfg.Pipeline.Current().Sources), "max_body_bytes", maxBody)
		return srv.Serve(ingest.Lingering(lis)) // nil once shut down
	})
	// Stop accepting and let in-flight requests finish their writes, then
	// flush the producer.
	svc.OnShutdown("webhook http drain", 10*time.Second, srv.ShutdownWithContext)
	svc.CloseProducer(producer)
	return svc.Run()
}
