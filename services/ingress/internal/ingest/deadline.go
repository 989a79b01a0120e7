package ingest

import (
	"context"
	"sync/atomic"
	"time"
)

// deadlineStep is how much later than ProduceTimeout a write may be cut
// short: the requests that start within one step share a deadline.
const deadlineStep = 10 * time.Millisecond

// deadlines hands out the contexts that bound the Kafka writes: each ends
// ProduceTimeout after the request's start, rounded up to the next
// deadlineStep, and every request starting in the same step shares it. That
// is one context and one timer per 10 ms instead of three allocations and a
// timer per request (the write's trace context travels in the record, not
// in this context).
//
// A step is counted: one reference while it is the current step and one per
// write using it. The last release cancels it, which stops its timer, so a
// timer fires only for a step still in use at its deadline (a write timing
// out, or the current step after the traffic stopped). Left to fire, every
// step's timer woke the process once more per step: at 100 requests/s, a
// wake-up per request.
type deadlines struct {
	timeout time.Duration
	cur     atomic.Pointer[deadline]
}

type deadline struct {
	end    time.Time
	ctx    context.Context
	cancel context.CancelFunc
	refs   atomic.Int32 // 0: cancelled, never used again
}

// after returns a step ending timeout from now (at most deadlineStep
// later); the caller releases it when its write is done.
func (d *deadlines) after() *deadline {
	end := time.Now().Add(d.timeout).Truncate(deadlineStep).Add(deadlineStep)
	for {
		c := d.cur.Load()
		if c != nil && c.end.Equal(end) {
			if c.acquire() {
				return c
			}
			// Released as another request replaced it: look again.
			continue
		}
		if c != nil && c.end.After(end) {
			// A request that started later stored the next step's: this
			// one uses its own.
			return newDeadline(end, 1)
		}
		n := newDeadline(end, 2) // the current step's reference and ours
		if d.cur.CompareAndSwap(c, n) {
			if c != nil {
				c.release() // no longer current
			}
			return n
		}
		n.cancel() // another request stored a step first
	}
}

func newDeadline(end time.Time, refs int32) *deadline {
	n := &deadline{end: end}
	n.ctx, n.cancel = context.WithDeadline(context.Background(), end)
	n.refs.Store(refs)
	return n
}

// acquire takes a reference unless the step was already cancelled.
func (c *deadline) acquire() bool {
	for {
		r := c.refs.Load()
		if r == 0 {
			return false
		}
		if c.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// release gives a reference back; the last one cancels the step.
func (c *deadline) release() {
	if c.refs.Add(-1) == 0 {
		c.cancel()
	}
}
