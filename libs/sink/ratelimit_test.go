package sink

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/localinfra"
)

// Two replicas sharing one vendor limit get one slot each per interval
// between them, and a 429's Retry-After holds for both.
func TestASharedRateHoldsAcrossReplicas(t *testing.T) {
	addr := localinfra.RedisForTest(t)
	a := SharedRate{RDB: redis.NewClient(&redis.Options{Addr: addr}), Key: "rate:test", Every: 100 * time.Millisecond, Burst: 2}
	b := a
	b.RDB = redis.NewClient(&redis.Options{Addr: addr})
	ctx := context.Background()
	var waits []time.Duration
	for _, r := range []SharedRate{a, b, a, b, a, b} { // two replicas, one after the other
		d, err := r.Reserve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, d)
	}
	// Six reservations at once, burst 2 at 10/s: 0, 0, then 100, 200, 300, 400 ms.
	var total time.Duration
	zero := 0
	for _, w := range waits {
		total += w
		if w == 0 {
			zero++
		}
	}
	if zero != 2 || total < 900*time.Millisecond || total > 1000*time.Millisecond {
		t.Fatalf("waits %v: want two at once and the rest 100 ms apart", waits)
	}
	if err := a.Push(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if d, _ := b.Reserve(ctx); d < 1900*time.Millisecond {
		t.Fatalf("after a Retry-After of 2 s the other replica may go in %s", d)
	}
}
