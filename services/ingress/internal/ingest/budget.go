package ingest

import (
	"sync"
)

// budget bounds what the requests being handled hold, in total and per
// source: requests, and bytes of body memory. A source that reaches its own
// share is refused while the others keep theirs; only the total is shared.
type budget struct {
	mu sync.Mutex
	// limits
	maxReqs, srcReqs   int
	maxBytes, srcBytes int64
	// usage
	reqs      int
	bytes     int64
	bySrcReqs map[string]int
	bySrcByte map[string]int64
}

// outcome of an acquisition.
type verdict int

const (
	granted verdict = iota
	sourceFull
	allFull
)

func newBudget(maxReqs, srcReqs int, maxBytes, srcBytes int64) *budget {
	return &budget{maxReqs: maxReqs, srcReqs: srcReqs, maxBytes: maxBytes, srcBytes: srcBytes,
		bySrcReqs: map[string]int{}, bySrcByte: map[string]int64{}}
}

// enter takes a request slot of source (the source share first: a source
// that is over its share never takes a slot of the total).
func (b *budget) enter(source string) verdict {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bySrcReqs[source] >= b.srcReqs {
		return sourceFull
	}
	if b.reqs >= b.maxReqs {
		return allFull
	}
	b.reqs++
	b.bySrcReqs[source]++
	return granted
}

// leave gives back a request slot and n bytes.
func (b *budget) leave(source string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reqs--
	b.bytes -= n
	if c := b.bySrcReqs[source] - 1; c > 0 {
		b.bySrcReqs[source] = c
	} else {
		delete(b.bySrcReqs, source)
	}
	if c := b.bySrcByte[source] - n; c > 0 {
		b.bySrcByte[source] = c
	} else {
		delete(b.bySrcByte, source)
	}
}

// grow reserves n more bytes for a request of source.
func (b *budget) grow(source string, n int64) verdict {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bySrcByte[source]+n > b.srcBytes {
		return sourceFull
	}
	if b.bytes+n > b.maxBytes {
		return allFull
	}
	b.bytes += n
	b.bySrcByte[source] += n
	return granted
}

// inFlight is the number of requests being handled.
func (b *budget) inFlight() (int, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reqs, b.bytes
}
