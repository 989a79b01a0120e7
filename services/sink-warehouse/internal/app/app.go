// Package app is the sink-warehouse composition root.
package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/service"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/services/sink-warehouse/internal/warehouse"
)

// Config is the sink-warehouse configuration.
type Config struct {
	Common service.Common
	// GroupID (SINK_WAREHOUSE_GROUP, default "closedloop-sink-warehouse").
	GroupID string
	// DatabaseURL (DATABASE_URL, required): a PostgreSQL connection URL.
	DatabaseURL string
	// Sink holds the runtime settings (SINK_MAX_ATTEMPTS, ...; the batch
	// size is the pipeline's sinks.warehouse.batch_size).
	Sink sink.Settings
	// Pipeline is read from PIPELINE_CONFIG (required): sinks.warehouse
	// (read at start-up; a schema change needs a restart).
	Pipeline *service.Pipeline
}

// Load reads and validates the configuration.
func Load(e *config.Env) (Config, error) {
	c := Config{
		Common:      service.LoadCommon(e, 8084, 9094),
		GroupID:     e.String("SINK_WAREHOUSE_GROUP", "closedloop-sink-warehouse"),
		DatabaseURL: e.Required("DATABASE_URL", "the PostgreSQL database, e.g. postgres://user@host:5432/db"),
	}
	if c.DatabaseURL != "" {
		scheme, _, isURL := strings.Cut(c.DatabaseURL, "://")
		if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
			e.Errorf("DATABASE_URL is not a PostgreSQL URL: %v", err)
		} else if isURL && scheme != "postgres" && scheme != "postgresql" {
			e.Errorf("DATABASE_URL has scheme %q: use postgres://user:password@host:5432/db", scheme)
		}
	}
	c.Sink = sink.LoadSettings(e)
	c.Pipeline = service.LoadPipeline(e, nil)
	return c, e.Err()
}

// Run starts the sink and blocks until ctx is cancelled.
func Run(ctx context.Context) error {
	cfg, err := Load(config.FromEnviron())
	if err != nil {
		return err
	}
	svc, err := service.New(ctx, "sink-warehouse", cfg.Common)
	if err != nil {
		return err
	}
	t := cfg.Common.Topics
	dlq := t.DLQ("sink-warehouse")
	if err := svc.EnsureTopics(ctx, t.Enriched, t.Priority, t.Quarantine, dlq, t.Replay("sink-warehouse")); err != nil {
		return err
	}
	pool, err := connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	schema := cfg.Pipeline.Current().Sinks.Warehouse.Schema
	if err := warehouse.Migrate(ctx, pool, schema); err != nil {
		pool.Close()
		return err
	}
	svc.Status.AddCheck("postgres", warehouse.Ping(pool))
	svc.Log.Info("warehouse ready", "schema", schema, "table", schema+".feedback_events", "view", schema+".feedback_latest")
	producer := svc.Producer() // quarantine and dead letters
	rcfg := sink.Config{Sink: "sink-warehouse", DLQTopic: dlq, DLQ: producer, Log: svc.Log,
		Checkpoint:    sink.Idempotent{}, // the unique event_id is the warehouse's own checkpoint
		Filter:        sink.FilterOf(cfg.Pipeline.Current().Sinks.Warehouse.Filter.Expr),
		PriorityTopic: t.Priority}
	cfg.Sink.Apply(&rcfg)
	runner, err := sink.New(rcfg, warehouse.NewWriter(pool, schema))
	if err != nil {
		pool.Close()
		return err
	}
	svc.Status.AddDestination(runner)
	if err := svc.ConsumeBatch(cfg.GroupID, []string{t.Priority, t.Enriched, t.Replay("sink-warehouse")}, producer, cfg.Pipeline.Current().Sinks.Warehouse.BatchSize, runner.HandleBatch); err != nil {
		pool.Close()
		return err
	}
	svc.CloseProducer(producer)
	svc.OnShutdown("postgres", 2*time.Second, func(context.Context) error { pool.Close(); return nil })
	return svc.Run()
}

func connect(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err = pool.Ping(ctx)
		if err == nil {
			return pool, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			pool.Close()
			return nil, fmt.Errorf("PostgreSQL at %s:%d is not reachable: %w (check DATABASE_URL)", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
