package sink

import (
	"time"

	"github.com/closedloop/closedloop/libs/retry"
)

// Settings are the runtime settings every sink service reads from its
// environment (LoadSettings).
type Settings struct {
	MaxBatch         int           // SINK_MAX_BATCH (500)
	MaxAttempts      int           // SINK_MAX_ATTEMPTS (8)
	MaxElapsed       time.Duration // SINK_MAX_ELAPSED (10m)
	BackoffMax       time.Duration // SINK_BACKOFF_MAX (30s)
	BreakerThreshold int           // SINK_BREAKER_THRESHOLD (5 consecutive failed deliveries)
	BreakerOpenFor   time.Duration // SINK_BREAKER_OPEN_FOR (10s between probes)
	RatePerSecond    float64       // SINK_RATE_LIMIT (events/s; 0 = none)
	Concurrency      int           // SINK_CONCURRENCY (batches at once; 0 = one per partition worker; default: the service's)
}

// Env is the part of config.Env LoadSettings reads.
type Env interface {
	Int(name string, def int) int
	Duration(name string, def time.Duration) time.Duration
	Errorf(format string, args ...any)
}

// LoadSettings reads Settings, reporting bad values through e.
// concurrency is the service's default for SINK_CONCURRENCY: 0 (one batch
// per partition worker) where the destination answers each batch on its
// own (HTTP receivers), 1 where concurrent batches contend inside it
// (PostgreSQL inserting into one table: docs/benchmarks.md).
func LoadSettings(e Env, concurrency int) Settings {
	s := Settings{
		MaxBatch:         e.Int("SINK_MAX_BATCH", 500),
		MaxAttempts:      e.Int("SINK_MAX_ATTEMPTS", 8),
		MaxElapsed:       e.Duration("SINK_MAX_ELAPSED", 10*time.Minute),
		BackoffMax:       e.Duration("SINK_BACKOFF_MAX", 30*time.Second),
		BreakerThreshold: e.Int("SINK_BREAKER_THRESHOLD", 5),
		BreakerOpenFor:   e.Duration("SINK_BREAKER_OPEN_FOR", 10*time.Second),
		RatePerSecond:    float64(e.Int("SINK_RATE_LIMIT", 0)),
		Concurrency:      e.Int("SINK_CONCURRENCY", concurrency),
	}
	if s.MaxBatch < 1 || s.MaxAttempts < 1 || s.BreakerThreshold < 1 || s.RatePerSecond < 0 || s.Concurrency < 0 {
		e.Errorf("SINK_MAX_BATCH, SINK_MAX_ATTEMPTS and SINK_BREAKER_THRESHOLD must be at least 1, SINK_RATE_LIMIT and SINK_CONCURRENCY at least 0")
	}
	return s
}

// Apply copies the settings into cfg (a new Breaker when cfg has none).
func (s Settings) Apply(cfg *Config) {
	cfg.MaxAttempts, cfg.MaxElapsed, cfg.BackoffMax, cfg.RatePerSecond = s.MaxAttempts, s.MaxElapsed, s.BackoffMax, s.RatePerSecond
	cfg.Concurrency = s.Concurrency
	if cfg.Breaker == nil {
		cfg.Breaker = retry.NewBreaker(s.BreakerThreshold, s.BreakerOpenFor, nil)
	}
}
