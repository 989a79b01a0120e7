package sink

import (
	"context"
	"sync"
	"time"
)

// lanes admits batches to the destination: at most `slots` at once (the
// per-destination concurrency), and the priority lane before the standard
// one. A priority batch waiting for a slot gets the next one. While the
// priority lane has a backlog (a batch in delivery with more records behind
// it on its partition) standard batches wait, also for priorityGrace after
// such a batch finished (its next batch is being fetched), so the backlog
// drains first. A priority lane without a backlog — live traffic — does not
// hold the standard lane up: both flow, so neither starves.
type lanes struct {
	mu            sync.Mutex
	free          int // free slots; < 0 never
	prioBacklog   int // priority batches holding a slot with records behind them
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

// acquire waits for a slot for a batch of the given lane (backlog: a
// priority batch with more records behind it); release it with the
// returned func.
func (l *lanes) acquire(ctx context.Context, priority, backlog bool) (func(), error) {
	l.mu.Lock()
	counted := false
	for {
		var wait time.Duration
		admit := l.free > 0
		if admit && !priority {
			switch {
			case l.prioBacklog > 0 || l.prioWaiting > 0:
				admit = false
			case !l.lastPriority.IsZero():
				if since := l.now().Sub(l.lastPriority); since < l.priorityGrace {
					admit, wait = false, l.priorityGrace-since
				}
			}
		}
		if admit {
			l.free--
			if counted {
				l.prioWaiting--
			}
			backlog = priority && backlog
			if backlog {
				l.prioBacklog++
			}
			l.mu.Unlock()
			return func() { l.release(backlog) }, nil
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

// holdingStandard reports whether a standard batch would now wait for the
// priority lane (its backlog, a priority batch waiting, or the grace after
// one).
func (l *lanes) holdingStandard() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.prioBacklog > 0 || l.prioWaiting > 0 || (!l.lastPriority.IsZero() && l.now().Sub(l.lastPriority) < l.priorityGrace)
}

func (l *lanes) release(backlog bool) {
	l.mu.Lock()
	l.free++
	if backlog {
		l.prioBacklog--
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
