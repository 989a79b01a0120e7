package sink

import (
	"context"
	"sync"
	"time"
)

// lanes admits batches to the destination: at most `slots` at once (the
// per-destination concurrency), and the priority lane before the standard
// one — a standard batch waits while a priority batch is in delivery or
// waiting for a slot, and for priorityGrace after the last one finished,
// so a priority backlog (whose next batch is being fetched) drains first.
type lanes struct {
	mu            sync.Mutex
	free          int // free slots; < 0 never
	prioActive    int // priority batches holding a slot
	prioWaiting   int // priority batches waiting for one
	lastPriority  time.Time
	changed       chan struct{} // closed and replaced on every release
	priorityGrace time.Duration
	now           func() time.Time
}

const priorityGrace = 25 * time.Millisecond

func newLanes(slots int, now func() time.Time) *lanes {
	if slots <= 0 {
		slots = 1 << 30 // no limit beyond the consumer's partition workers
	}
	return &lanes{free: slots, changed: make(chan struct{}), priorityGrace: priorityGrace, now: now}
}

// acquire waits for a slot for a batch of the given lane; release it with
// the returned func.
func (l *lanes) acquire(ctx context.Context, priority bool) (func(), error) {
	l.mu.Lock()
	counted := false
	for {
		var wait time.Duration
		admit := l.free > 0
		if admit && !priority {
			switch {
			case l.prioActive > 0 || l.prioWaiting > 0:
				admit = false
			case !l.lastPriority.IsZero():
				if since := l.now().Sub(l.lastPriority); since < l.priorityGrace {
					admit, wait = false, l.priorityGrace-since
				}
			}
		}
		if admit {
			l.free--
			if priority {
				l.prioActive++
				if counted {
					l.prioWaiting--
				}
			}
			l.mu.Unlock()
			return func() { l.release(priority) }, nil
		}
		if priority && !counted {
			l.prioWaiting++
			counted = true
		}
		ch := l.changed
		l.mu.Unlock()
		var timer *time.Timer
		var fired <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fired = timer.C
		}
		select {
		case <-ctx.Done():
		case <-ch:
		case <-fired:
		}
		if timer != nil {
			timer.Stop()
		}
		l.mu.Lock()
		if ctx.Err() != nil {
			if counted {
				l.prioWaiting--
				l.signal()
			}
			l.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

func (l *lanes) release(priority bool) {
	l.mu.Lock()
	l.free++
	if priority {
		l.prioActive--
		l.lastPriority = l.now()
	}
	l.signal()
	l.mu.Unlock()
}

// signal wakes every waiter to re-check (callers hold mu).
func (l *lanes) signal() {
	close(l.changed)
	l.changed = make(chan struct{})
}
