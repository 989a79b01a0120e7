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
	// Each reservation's slot is the moment Redis took it plus its wait.
	// That moment lies between the call's start and end here, so each slot
	// is known within one call's duration: the calls on a loaded machine
	// take milliseconds, and the waits shrink by the time that passed.
	type reservation struct {
		start, end time.Time
		wait       time.Duration
	}
	var rs []reservation
	for _, r := range []SharedRate{a, b, a, b, a, b} { // two replicas, one after the other
		start := time.Now()
		d, err := r.Reserve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, reservation{start, time.Now(), d})
	}
	// Burst 2 at 10/s: the first two at once, then a slot every 100 ms
	// after the first: 100, 200, 300, 400 ms.
	const slack = 2 * time.Millisecond // Redis counts in µs, rounding
	if rs[0].wait != 0 || rs[1].wait != 0 {
		t.Fatalf("the first two waited %s and %s: want both at once", rs[0].wait, rs[1].wait)
	}
	for k := 2; k < len(rs); k++ {
		want := time.Duration(k-1) * 100 * time.Millisecond
		earliest := rs[k].start.Add(rs[k].wait).Sub(rs[0].end) - slack
		latest := rs[k].end.Add(rs[k].wait).Sub(rs[0].start) + slack
		if want < earliest || want > latest {
			t.Fatalf("reservation %d: its slot is %s–%s after the first, want %s", k+1, earliest, latest, want)
		}
	}
	if err := a.Push(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if d, _ := b.Reserve(ctx); d < 1900*time.Millisecond {
		t.Fatalf("after a Retry-After of 2 s the other replica may go in %s", d)
	}
}
