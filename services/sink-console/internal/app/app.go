// Package app is the sink-console composition root.
package app

import (
	"context"
	"os"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/service"
	"github.com/closedloop/closedloop/services/sink-console/internal/console"
)

// Config is the sink-console configuration.
type Config struct {
	Common service.Common
	// GroupID (SINK_CONSOLE_GROUP, default "closedloop-sink-console").
	GroupID string
	// JSON (SINK_CONSOLE_JSON, default false) prints protojson instead of a summary line.
	JSON bool
}

// Run starts the sink and blocks until ctx is cancelled.
func Run(ctx context.Context) error {
	e := config.FromEnviron()
	cfg := Config{Common: service.LoadCommon(e, 8085, 9195), GroupID: e.String("SINK_CONSOLE_GROUP", "closedloop-sink-console"), JSON: e.Bool("SINK_CONSOLE_JSON", false)}
	if err := e.Err(); err != nil {
		return err
	}
	svc, err := service.New(ctx, "sink-console", cfg.Common)
	if err != nil {
		return err
	}
	t := cfg.Common.Topics
	if err := svc.EnsureTopics(ctx, t.Enriched, t.Priority, t.Quarantine); err != nil {
		return err
	}
	producer := svc.Producer() // quarantine only
	p := &console.Printer{Out: os.Stdout, JSON: cfg.JSON}
	if err := svc.Consume(cfg.GroupID, []string{t.Priority, t.Enriched}, producer, p.Handle); err != nil {
		return err
	}
	svc.CloseProducer(producer)
	return svc.Run()
}
