package sink

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// DisabledFlag is a destination's "disabled until an operator resumes it"
// flag in Redis (a channel archived, a credential refused): every replica
// reads it when the destination opens, and Enable (closedloopctl resume)
// clears it. A destination embeds it to implement Disabler and Enabler.
//
// With a Fingerprint (of the credential the flag is about) the flag holds
// it, and one set for another fingerprint is stale — the credential was
// replaced — and is cleared when the destination opens.
type DisabledFlag struct {
	RDB         redis.UniversalClient
	Key         string
	Fingerprint string
	off         atomic.Pointer[string]
}

// Load reads the flag (call it when the destination opens).
func (f *DisabledFlag) Load(ctx context.Context) error {
	v, err := f.RDB.Get(ctx, f.Key).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return err
	}
	why := v
	if f.Fingerprint != "" {
		fp, rest, _ := strings.Cut(v, " ")
		if fp != f.Fingerprint {
			return f.RDB.Del(ctx, f.Key).Err()
		}
		why = rest
	}
	f.off.Store(&why)
	return nil
}

// Disabled implements Disabler.
func (f *DisabledFlag) Disabled() (string, bool) {
	if p := f.off.Load(); p != nil {
		return *p, true
	}
	return "", false
}

// Enable implements Enabler.
func (f *DisabledFlag) Enable(ctx context.Context) error {
	if err := f.RDB.Del(ctx, f.Key).Err(); err != nil {
		return err
	}
	f.off.Store(nil)
	return nil
}

// Disable sets the flag with the reason, here at once and in Redis for
// every replica.
func (f *DisabledFlag) Disable(ctx context.Context, why string) error {
	f.off.Store(&why)
	v := why
	if f.Fingerprint != "" {
		v = f.Fingerprint + " " + why
	}
	return f.RDB.Set(context.WithoutCancel(ctx), f.Key, v, 0).Err()
}
