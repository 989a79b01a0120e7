package sink

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Checkpoint remembers which events a destination has received, so a
// redelivered event (after a crash before the offset commit, or a
// rebalance) produces no second outcome.
type Checkpoint interface {
	// Delivered reports, per key, whether it was marked.
	Delivered(ctx context.Context, keys []string) ([]bool, error)
	// Mark records keys as delivered.
	Mark(ctx context.Context, keys []string) error
}

// Idempotent is the Checkpoint of a destination that is itself idempotent
// on the event id (the warehouse's unique key): nothing to remember.
type Idempotent struct{}

// Delivered implements Checkpoint.
func (Idempotent) Delivered(_ context.Context, keys []string) ([]bool, error) {
	return make([]bool, len(keys)), nil
}

// Mark implements Checkpoint.
func (Idempotent) Mark(context.Context, []string) error { return nil }

// RedisCheckpoint keeps a key per delivered event in Redis for TTL.
type RedisCheckpoint struct {
	RDB    redis.UniversalClient
	Prefix string // e.g. "closedloop:sink:sink-webhook:crm-hook:"
	TTL    time.Duration
}

// Delivered implements Checkpoint.
func (c RedisCheckpoint) Delivered(ctx context.Context, keys []string) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	pipe := c.RDB.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Exists(ctx, c.Prefix+k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	for i, cmd := range cmds {
		out[i] = cmd.Val() > 0
	}
	return out, nil
}

// Mark implements Checkpoint.
func (c RedisCheckpoint) Mark(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = 7 * 24 * time.Hour
	}
	pipe := c.RDB.Pipeline()
	for _, k := range keys {
		pipe.Set(ctx, c.Prefix+k, "1", ttl)
	}
	_, err := pipe.Exec(ctx)
	return err
}
