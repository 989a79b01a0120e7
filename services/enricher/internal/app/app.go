// Package app is the enricher composition root.
package app

import (
	"context"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/service"
	"github.com/closedloop/closedloop/services/enricher/internal/enrich"
)

// Config is the enricher configuration.
type Config struct {
	Common service.Common
	// GroupID (ENRICHER_GROUP, default "closedloop-enricher").
	GroupID string
}

// Load reads and validates the configuration.
func Load(e *config.Env) (Config, error) {
	c := Config{Common: service.LoadCommon(e, 8083, 9093), GroupID: e.String("ENRICHER_GROUP", "closedloop-enricher")}
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
	producer := svc.Producer()
	h := &enrich.Handler{Producer: producer, EnrichedTopic: t.Enriched}
	if err := svc.Consume(cfg.GroupID, []string{t.Normalized}, producer, h.Handle); err != nil {
		return err
	}
	svc.CloseProducer(producer)
	return svc.Run()
}
