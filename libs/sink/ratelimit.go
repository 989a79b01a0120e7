package sink

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// SharedRate is a vendor's rate limit enforced across every replica of a
// service (a vendor limits the account, not the process): a generic cell
// rate algorithm in Redis. Reserve takes the next slot and says how long to
// wait for it; the clock is Redis's own, so replicas' clocks do not matter.
type SharedRate struct {
	RDB redis.UniversalClient
	// Key names the limited thing ("closedloop:sink:slack:rate:<channel>").
	Key string
	// Every is the interval between two requests (1s for one a second);
	// Burst how many may go at once after a quiet time.
	Every time.Duration
	Burst int
}

// gcra: KEYS[1] the theoretical arrival time (µs); ARGV[1] interval µs,
// ARGV[2] burst. Returns the wait in µs before the reserved slot.
var gcra = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
return wait
`)

// Reserve takes the next slot and returns how long to wait before using it.
func (r SharedRate) Reserve(ctx context.Context) (time.Duration, error) {
	burst := max(r.Burst, 1)
	us, err := gcra.Run(ctx, r.RDB, []string{r.Key}, r.Every.Microseconds(), burst).Int64()
	if err != nil {
		return 0, err
	}
	return time.Duration(us) * time.Microsecond, nil
}

// Wait reserves a slot and waits for it (or ctx).
func (r SharedRate) Wait(ctx context.Context) error {
	d, err := r.Reserve(ctx)
	if err != nil || d == 0 {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Push moves the next free slot to at least after d from now: the vendor
// answered 429 with Retry-After d, which holds for every replica.
func (r SharedRate) Push(ctx context.Context, d time.Duration) error {
	tolerance := time.Duration(max(r.Burst, 1)-1) * r.Every
	return pushScript.Run(ctx, r.RDB, []string{r.Key}, (d + tolerance).Microseconds()).Err()
}

var pushScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < at then redis.call('SET', KEYS[1], at, 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000) end
return 0
`)
