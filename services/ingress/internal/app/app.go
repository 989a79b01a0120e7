// Package app is the ingress composition root: configuration, wiring, run.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

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
	// MaxBody (INGRESS_MAX_BODY_BYTES, default 1 MiB).
	MaxBody int
	// ProduceTimeout (INGRESS_PRODUCE_TIMEOUT, default 3s).
	ProduceTimeout time.Duration
	// MaxInFlight (INGRESS_MAX_IN_FLIGHT, default 1024): requests handled at
	// once; more get 503 + Retry-After.
	MaxInFlight int
}

// Load reads and validates the configuration.
func Load(e *config.Env, lookup func(string) (string, bool)) (Config, error) {
	c := Config{
		Common:         service.LoadCommon(e, 8081, 9091),
		Addr:           e.String("INGRESS_ADDR", ":8080"),
		MaxBody:        e.Int("INGRESS_MAX_BODY_BYTES", 1<<20),
		ProduceTimeout: e.Duration("INGRESS_PRODUCE_TIMEOUT", 3*time.Second),
		MaxInFlight:    e.Int("INGRESS_MAX_IN_FLIGHT", 1024),
	}
	if c.MaxInFlight < 1 {
		e.Errorf("INGRESS_MAX_IN_FLIGHT=%d must be at least 1", c.MaxInFlight)
	}
	if c.MaxBody < 1024 {
		e.Errorf("INGRESS_MAX_BODY_BYTES=%d is too small (at least 1024)", c.MaxBody)
	}
	if c.ProduceTimeout > 4*time.Second {
		e.Errorf("INGRESS_PRODUCE_TIMEOUT=%s must stay under the providers' 5s answer deadline", c.ProduceTimeout)
	}
	c.Pipeline = service.LoadPipeline(e, lookup)
	return c, e.Err()
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
		MaxBody: int64(cfg.MaxBody), ProduceTimeout: cfg.ProduceTimeout, MaxInFlight: cfg.MaxInFlight, Instance: cfg.Common.Instance, Log: svc.Log,
	})
	if err != nil {
		return err
	}
	svc.Watch(cfg.Pipeline, h.Reload)
	mux := http.NewServeMux()
	h.Mount(mux)
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (INGRESS_ADDR): %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           ingest.Traced(mux),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
	svc.Group.Go("webhook http", func(context.Context) error {
		svc.Log.Info("webhooks listening", "addr", lis.Addr().String(), "sources", len(cfg.Pipeline.Current().Sources))
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	// Stop accepting and let in-flight requests finish their writes, then
	// flush the producer.
	svc.OnShutdown("webhook http drain", 10*time.Second, srv.Shutdown)
	svc.CloseProducer(producer)
	return svc.Run()
}
