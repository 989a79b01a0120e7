// Package app is the enricher composition root.
package app

import (
	"context"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/service"
	"github.com/closedloop/closedloop/services/enricher/internal/enrich"
	"github.com/closedloop/closedloop/services/enricher/internal/lookup"
)

// Config is the enricher configuration.
type Config struct {
	Common service.Common
	// GroupID (ENRICHER_GROUP, default "closedloop-enricher").
	GroupID string
	// RedisURL (REDIS_URL) holds the lookup cache; required when the
	// pipeline file declares lookups.
	RedisURL string
	// RedisPrefix (REDIS_KEY_PREFIX, default "closedloop:") prefixes every key.
	RedisPrefix string
	// MaxBatch (ENRICHER_MAX_BATCH, default 500): the most records of one
	// partition enriched and produced together.
	MaxBatch int
	// Pipeline is read from PIPELINE_CONFIG (required): enrichment lookups
	// and rules, read at start-up.
	Pipeline *service.Pipeline
}

// Load reads and validates the configuration.
func Load(e *config.Env) (Config, error) {
	c := Config{
		Common:      service.LoadCommon(e, 8083, 9193),
		GroupID:     e.String("ENRICHER_GROUP", "closedloop-enricher"),
		RedisURL:    e.String("REDIS_URL", ""),
		RedisPrefix: e.String("REDIS_KEY_PREFIX", "closedloop:"),
		MaxBatch:    e.Int("ENRICHER_MAX_BATCH", 500),
	}
	c.Pipeline = service.LoadPipeline(e, nil)
	if c.Pipeline != nil && len(c.Pipeline.Current().Enrichment.Lookups) > 0 {
		if c.RedisURL == "" {
			e.Errorf("REDIS_URL is not set: the enrichment lookups in PIPELINE_CONFIG cache their answers in Redis (redis://host:6379/0)")
		} else if _, err := redis.ParseURL(c.RedisURL); err != nil {
			e.Errorf("REDIS_URL: %v", err)
		}
	}
	if c.MaxBatch < 1 {
		e.Errorf("ENRICHER_MAX_BATCH must be at least 1")
	}
	return c, e.Err()
}

// Run starts the enricher and blocks until ctx is cancelled.
func Run(ctx context.Context) error {
	cfg, err := Load(config.FromEnviron())
	if err != nil {
		return err
	}
	svc, err := service.New(ctx, "enricher", cfg.Common)
	if err != nil {
		return err
	}
	t := cfg.Common.Topics
	if err := svc.EnsureTopics(ctx, t.Normalized, t.Enriched, t.Priority, t.Quarantine); err != nil {
		return err
	}
	en := cfg.Pipeline.Current().Enrichment
	var lookups []*lookup.Lookup
	if len(en.Lookups) > 0 {
		// The cache is an optimisation: without Redis every lookup asks the
		// service, so Redis is not a readiness condition once connected.
		rdb, err := svc.Redis(ctx, cfg.RedisURL)
		if err != nil {
			return err
		}
		for _, lc := range en.Lookups {
			l, err := lookup.New(lc, lookup.Options{RDB: rdb, Prefix: cfg.RedisPrefix + "enrich:", Log: svc.Log, LookupEnv: os.LookupEnv})
			if err != nil {
				return err
			}
			lookups = append(lookups, l)
		}
	}
	rules := en.RoutingRules()
	producer := svc.Producer()
	h := enrich.New(enrich.Options{Producer: producer, StandardTopic: t.Enriched, PriorityTopic: t.Priority,
		Lookups: lookups, Rules: rules, Log: svc.Log})
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.Name
	}
	svc.Log.Info("enrichment ready", "lookups", len(lookups), "rules", names, "standard", t.Enriched, "priority", t.Priority)
	svc.BatchingStage(100 * time.Millisecond) // one lookup pass and one produce per batch
	if err := svc.ConsumeBatch(cfg.GroupID, []string{t.Normalized}, producer, cfg.MaxBatch, h.HandleBatch); err != nil {
		return err
	}
	svc.PausableConsumers() // closedloopctl pause enricher
	svc.CloseProducer(producer)
	return svc.Run()
}
