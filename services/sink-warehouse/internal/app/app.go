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
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
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
		Common:      service.LoadCommon(e, 8084, 9194),
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
	// One INSERT at a time per process (SINK_CONCURRENCY): the consumer's
	// workers still decode, filter and commit in parallel, but two inserts
	// into one table contend for its indexes and, on a small machine, for
	// the cores the rest of the pipeline needs. On a 2-core machine one at a
	// time cut PostgreSQL's CPU per row in the pipeline's drain by over a
	// quarter, raised the drain by a quarter and took the median
	// webhook→row p99 at 1,000/s from ~150 to ~90 ms, for 6 % less of the
	// sink's own maximum (docs/benchmarks.md, fourteenth pass).
	c.Sink = sink.LoadSettings(e, 1)
	c.Pipeline = service.LoadPipeline(e, nil)
	return c, e.Err()
}

// Run starts the sink and blocks until ctx is cancelled. It serves health
// and status at once; PostgreSQL is connected (and migrated) in the
// background, and the sink is ready when it is.
func Run(ctx context.Context) error {
	cfg, err := Load(config.FromEnviron())
	if err != nil {
		return err
	}
	svc, err := service.New(ctx, "sink-warehouse", cfg.Common)
	if err != nil {
		return err
	}
	wh := cfg.Pipeline.Current().Sinks.Warehouse
	var pool *pgxpool.Pool
	props := &warehouse.Propagations{Schema: wh.Schema}
	// A batch is one INSERT and one commit: PostgreSQL's cost is per batch
	// more than per row, so the longer linger.
	svc.BatchingStage(100 * time.Millisecond)
	err = sink.Host(ctx, svc, cfg.Sink, []sink.Instance{{
		Name: "warehouse", Group: cfg.GroupID, MaxBatch: wh.BatchSize, Filter: sink.FilterOf(wh.Filter.Expr),
		Checkpoint: sink.Idempotent{}, // the unique event_id is the warehouse's own checkpoint
		Open: func(ctx context.Context) (sink.Destination, error) {
			p, err := connect(ctx, cfg.DatabaseURL)
			if err != nil {
				return nil, err
			}
			if err := warehouse.Migrate(ctx, p, wh.Schema); err != nil {
				p.Close()
				return nil, err
			}
			pool = p
			props.Pool.Store(p)
			svc.Status.AddCheck("postgres", warehouse.Ping(p))
			loop := &warehouse.Loop{Pool: p, Schema: wh.Schema, MaxAge: 15 * time.Second, Now: time.Now}
			svc.Status.AddReport(func(ctx context.Context, resp *adminv1.GetStatusResponse) {
				if s, err := loop.Current(ctx); err == nil {
					resp.LoopClosure = s
				} else {
					svc.Log.Warn("loop closure summary failed", "err", err)
				}
			})
			if err := loop.Instrument(svc.Tel.Meter("github.com/closedloop/closedloop/services/sink-warehouse")); err != nil {
				svc.Log.Warn("loop closure gauges not registered", "err", err)
			}
			svc.Log.Info("warehouse ready", "schema", wh.Schema, "table", wh.Schema+".feedback_events", "view", wh.Schema+".feedback_latest", "unsubscribes", wh.Schema+".unsubscribe_propagations",
				"loop_closure", wh.Schema+".loop_closure")
			return warehouse.NewWriter(p, wh.Schema), nil
		},
		Close: func() { pool.Close() },
	}})
	if err != nil {
		return err
	}
	// The CRMs' unsubscribe propagations, into their table.
	t := svc.Common.Topics
	if err := svc.EnsureTopics(ctx, t.Unsubscribes()); err != nil {
		return err
	}
	quarantine := svc.Producer()
	if err := svc.ConsumeBatch(cfg.GroupID+"-unsubscribes", []string{t.Unsubscribes()}, quarantine, 500, props.Handle); err != nil {
		return err
	}
	svc.CloseProducer(quarantine)
	return svc.Run()
}

// connect opens a pool and checks it answers (one try: the host retries).
func connect(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s:%d is not reachable: %w (check DATABASE_URL)", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, err)
	}
	return pool, nil
}
