package retry

import (
	"context"
	"sync"
	"time"
)

// BreakerState is the state of a Breaker.
type BreakerState int

// Breaker states.
const (
	// Closed: deliveries flow.
	Closed BreakerState = iota
	// Open: the destination is failing; deliveries wait (consumption is
	// paused: Kafka holds the backlog) until OpenFor has passed.
	Open
	// HalfOpen: one delivery probes the destination; its success closes
	// the breaker, its failure opens it again.
	HalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "closed"
}

// Breaker is a circuit breaker on consecutive failed deliveries, with a
// manual pause on top. Every partition worker of a sink shares one, so a
// failing destination pauses the whole sink and one probe tests it.
type Breaker struct {
	threshold int
	openFor   time.Duration
	now       func() time.Time

	mu        sync.Mutex
	state     BreakerState
	failures  int
	openedAt  time.Time
	probing   bool
	paused    bool
	changed   chan struct{} // closed and replaced on every change
	onChange  func(BreakerState)
	openCount int
}

// NewBreaker opens after threshold consecutive failures and probes after
// openFor. onChange (may be nil) is told every state change.
func NewBreaker(threshold int, openFor time.Duration, onChange func(BreakerState)) *Breaker {
	if threshold <= 0 {
		threshold = 5
	}
	if openFor <= 0 {
		openFor = 10 * time.Second
	}
	return &Breaker{threshold: threshold, openFor: openFor, now: time.Now, changed: make(chan struct{}), onChange: onChange}
}

// State is the current state.
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Paused reports whether an operator paused delivery.
func (b *Breaker) Paused() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.paused
}

// Opened counts how often the breaker opened since start.
func (b *Breaker) Opened() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openCount
}

// Pause stops deliveries until Resume (an operator's hand on the valve).
func (b *Breaker) Pause() { b.mu.Lock(); b.paused = true; b.notifyLocked(); b.mu.Unlock() }

// Resume lets deliveries flow again after Pause.
func (b *Breaker) Resume() { b.mu.Lock(); b.paused = false; b.notifyLocked(); b.mu.Unlock() }

// Acquire waits until a delivery may be attempted: the breaker is closed,
// or open long enough that this caller may probe (probe is then true and
// the caller must report the result). It returns ctx's error if ctx ends
// first.
func (b *Breaker) Acquire(ctx context.Context) (probe bool, err error) {
	for {
		b.mu.Lock()
		if !b.paused {
			switch b.state {
			case Closed:
				b.mu.Unlock()
				return false, nil
			case Open:
				if wait := b.openedAt.Add(b.openFor).Sub(b.now()); wait <= 0 {
					b.setLocked(HalfOpen)
					b.probing = true
					b.mu.Unlock()
					return true, nil
				}
			}
		}
		ch := b.changed
		wait := time.Hour
		if !b.paused && b.state == Open {
			wait = b.openedAt.Add(b.openFor).Sub(b.now())
		}
		b.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// TryAcquire is Acquire without waiting, for callers that fail open
// instead of holding on (the enricher's lookups): ok is false while the
// breaker is open (or paused, or another caller is probing).
func (b *Breaker) TryAcquire() (probe, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.paused:
		return false, false
	case b.state == Closed:
		return false, true
	case b.state == Open && !b.openedAt.Add(b.openFor).After(b.now()):
		b.setLocked(HalfOpen)
		b.probing = true
		return true, true
	}
	return false, false
}

// Success reports a delivery that reached the destination.
func (b *Breaker) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = 0
	b.probing = false
	if b.state != Closed {
		b.setLocked(Closed)
	}
}

// Failure reports a delivery that failed retryably (the destination itself
// failing, not one bad event).
func (b *Breaker) Failure() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	switch {
	case b.state == HalfOpen && b.probing:
		b.probing = false
		b.openedAt = b.now()
		b.setLocked(Open)
	case b.state == Closed && b.failures >= b.threshold:
		b.openedAt = b.now()
		b.openCount++
		b.setLocked(Open)
	}
}

func (b *Breaker) setLocked(s BreakerState) {
	b.state = s
	b.notifyLocked()
	if b.onChange != nil {
		go b.onChange(s)
	}
}

func (b *Breaker) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}
