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
// in this context). They are never cancelled early: each ends at its
// deadline.
type deadlines struct {
	timeout time.Duration
	cur     atomic.Pointer[deadline]
}

type deadline struct {
	end time.Time
	ctx context.Context
	// cancel is called only when another request stored this step's
	// context first; otherwise the context ends at end by itself.
	cancel context.CancelFunc
}

// after returns a context ending timeout from now (at most deadlineStep
// later).
func (d *deadlines) after() context.Context {
	end := time.Now().Add(d.timeout).Truncate(deadlineStep).Add(deadlineStep)
	c := d.cur.Load()
	if c != nil && c.end.Equal(end) {
		return c.ctx
	}
	n := &deadline{end: end}
	n.ctx, n.cancel = context.WithDeadline(context.Background(), end)
	for {
		switch {
		case c != nil && c.end.Equal(end): // another request made it first
			n.cancel()
			return c.ctx
		case c != nil && c.end.After(end):
			// A request that started later stored the next step's: this
			// one keeps its own, which ends at its deadline.
			return n.ctx
		case d.cur.CompareAndSwap(c, n):
			return n.ctx
		}
		c = d.cur.Load()
	}
}
