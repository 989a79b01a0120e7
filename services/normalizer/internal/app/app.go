// Package app is the normalizer composition root.
package app

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/idempotency"
	"github.com/closedloop/closedloop/libs/service"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	"github.com/closedloop/closedloop/services/normalizer/internal/drift"
	"github.com/closedloop/closedloop/services/normalizer/internal/normalize"
)

// Config is the normalizer configuration.
type Config struct {
	Common service.Common
	// GroupID (NORMALIZER_GROUP, default "closedloop-normalizer").
	GroupID string
	// RedisURL (REDIS_URL, required), e.g. redis://localhost:6379/0.
	RedisURL string
	// RedisPrefix (REDIS_KEY_PREFIX, default "closedloop:") prefixes every key.
	RedisPrefix string
	// ProcessingTTL (DEDUPE_PROCESSING_TTL, default 30s): how long a claim
	// of a crashed worker blocks its event before it is processed again.
	ProcessingTTL time.Duration
	// MaxBatch (NORMALIZER_MAX_BATCH, default 500): the most records of one
	// partition deduplicated and produced together.
	MaxBatch int
	// RawInlineMax (RAW_PAYLOAD_INLINE_MAX_BYTES, default 64 KiB): a body up
	// to this size is copied into FeedbackEvent.raw_payload; a larger one is
	// referenced (raw_ref) so the event stays under the topic's size limit.
	RawInlineMax int
	// Drift bounds schema-drift tracking: DRIFT_MAX_PATHS_PER_TYPE (2000),
	// DRIFT_MAX_TYPES_PER_PROVIDER (100), DRIFT_TTL (720h).
	Drift drift.Limits
	// Pipeline is read from PIPELINE_CONFIG (required) and reloaded on
	// change: per-source dedupe TTLs.
	Pipeline *service.Pipeline
}

// Load reads and validates the configuration.
func Load(e *config.Env) (Config, error) {
	c := Config{
		Common:        service.LoadCommon(e, 8082, 9192),
		GroupID:       e.String("NORMALIZER_GROUP", "closedloop-normalizer"),
		RedisURL:      e.Required("REDIS_URL", "the Redis server for dedupe, e.g. redis://localhost:6379/0"),
		RedisPrefix:   e.String("REDIS_KEY_PREFIX", "closedloop:"),
		ProcessingTTL: e.Duration("DEDUPE_PROCESSING_TTL", 30*time.Second),
		MaxBatch:      e.Int("NORMALIZER_MAX_BATCH", 500),
		RawInlineMax:  e.Int("RAW_PAYLOAD_INLINE_MAX_BYTES", 64<<10),
		Drift: drift.Limits{PathsPerType: e.Int("DRIFT_MAX_PATHS_PER_TYPE", 2000), TypesPerProvider: e.Int("DRIFT_MAX_TYPES_PER_PROVIDER", 100),
			TTL: e.Duration("DRIFT_TTL", 30*24*time.Hour)},
	}
	if c.Drift.PathsPerType < 1 || c.Drift.TypesPerProvider < 1 || c.Drift.TTL < time.Hour {
		e.Errorf("DRIFT_MAX_PATHS_PER_TYPE and DRIFT_MAX_TYPES_PER_PROVIDER must be at least 1, DRIFT_TTL at least 1h")
	}
	if c.RawInlineMax < 1024 || c.RawInlineMax > 256<<10 {
		e.Errorf("RAW_PAYLOAD_INLINE_MAX_BYTES=%d must be between 1024 and 262144 (a larger copy would bring events near the topics' size limit)", c.RawInlineMax)
	}
	c.Pipeline = service.LoadPipeline(e, nil)
	if c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			e.Errorf("REDIS_URL: %v", err)
		}
	}
	return c, e.Err()
}

// Run starts the normalizer and blocks until ctx is cancelled.
func Run(ctx context.Context) error {
	cfg, err := Load(config.FromEnviron())
	if err != nil {
		return err
	}
	svc, err := service.New(ctx, "normalizer", cfg.Common)
	if err != nil {
		return err
	}
	t := cfg.Common.Topics
	if err := svc.EnsureTopics(ctx, t.Raw, t.Normalized, t.Quarantine); err != nil {
		return err
	}
	rdb, err := svc.Redis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	svc.Status.AddCheck("redis", idempotency.Ping(rdb))
	store := idempotency.New(rdb, idempotency.Options{
		Prefix:        cfg.RedisPrefix + "dedupe:",
		Owner:         cfg.Common.Instance + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		ProcessingTTL: cfg.ProcessingTTL,
	})
	producer := svc.Producer()
	tracker := drift.New(rdb, cfg.RedisPrefix+"drift:", cfg.Drift)
	adminv1.RegisterSchemaDriftServiceServer(svc.GRPC.GRPC, &drift.Server{Tracker: tracker})
	h := normalize.New(normalize.Options{
		Dedupe: store, Producer: producer, NormalizedTopic: t.Normalized, Log: svc.Log, RawInlineMax: cfg.RawInlineMax,
		Drift: tracker,
		TTL: func(source string) time.Duration {
			if s, ok := cfg.Pipeline.Current().Source(source); ok {
				return s.DedupeTTL.Duration
			}
			return config.DefaultDedupeTTL
		},
	})
	svc.Watch(cfg.Pipeline, func(*config.Pipeline) error { return nil })
	svc.BatchingStage(100 * time.Millisecond) // one Redis round trip and one produce per batch
	if err := svc.ConsumeBatch(cfg.GroupID, []string{t.Raw}, producer, cfg.MaxBatch, h.HandleBatch); err != nil {
		return err
	}
	svc.PausableConsumers() // closedloopctl pause normalizer
	svc.CloseProducer(producer)
	return svc.Run()
}
