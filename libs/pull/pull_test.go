package pull

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock drives a Limiter without sleeping: Wait advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.mu.Lock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	c.mu.Unlock()
	return nil
}

func limiterAt(perSecond int, c *fakeClock) *Limiter {
	l := NewLimiter(perSecond)
	l.now, l.sleep = c.Now, c.Sleep
	for i := range l.sent {
		l.sent[i] = c.Now()
	}
	return l
}

// In any window of one second no more than perSecond requests start — from
// the first one on, so a process restarted right after a burst of its
// predecessor cannot add a second burst within the same second.
func TestTheLimiterNeverLetsMoreThanTheRateStartInAnySecond(t *testing.T) {
	c := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	start := c.Now()
	l := limiterAt(3, c)
	var at []time.Time
	for range 12 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		at = append(at, c.Now())
	}
	if at[0].Sub(start) < time.Second {
		t.Fatalf("the first request went at +%s: a restart could burst", at[0].Sub(start))
	}
	for i := range at {
		n := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < time.Second; j++ {
			n++
		}
		if n > 3 {
			t.Fatalf("%d requests within one second from request %d", n, i)
		}
	}
	if got := at[11].Sub(at[0]); got > 4*(time.Second+Margin) {
		t.Fatalf("12 requests at 3/s took %s: the limiter is slower than it must be", got)
	}
	if l.Requests() != 12 {
		t.Fatalf("Requests() = %d", l.Requests())
	}
}

// A provider's Retry-After holds every request until it has passed.
func TestAPauseHoldsEveryRequest(t *testing.T) {
	c := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	l := limiterAt(0, c) // unlimited
	if err := l.Wait(context.Background()); err != nil || !c.Now().Equal(time.Unix(1_700_000_000, 0)) {
		t.Fatalf("an unlimited limiter waited: %v %s", err, c.Now())
	}
	l.PauseUntil(c.Now().Add(7 * time.Second))
	_ = l.Wait(context.Background())
	if got := c.Now().Sub(time.Unix(1_700_000_000, 0)); got != 7*time.Second {
		t.Fatalf("waited %s after a 7 s Retry-After", got)
	}
}
