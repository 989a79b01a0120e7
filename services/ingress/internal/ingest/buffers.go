package ingest

import "sync"

// Bodies and encoded records are the ingress's largest allocations (two
// ~1.5 KiB buffers per webhook, garbage a few milliseconds later); reusing
// them lets the collector run less often. Buffers up to 64 KiB are pooled by
// size class; larger ones are left to the collector, so a rare large body
// does not keep its memory.
var bufferClasses = [...]int{4 << 10, 16 << 10, 64 << 10}

var bufferPools [len(bufferClasses)]sync.Pool

// holders are the empty *[]byte that carry buffers in bufferPools: a pool
// holds pointers, and taking a new one for every buffer given back (&b)
// was 6 % of the ingress's allocated bytes at full load.
var holders sync.Pool

// getBuffer returns an empty buffer of capacity at least n (n ≤ 0: the
// smallest class).
func getBuffer(n int) []byte {
	for i, c := range bufferClasses {
		if n <= c {
			if h, ok := bufferPools[i].Get().(*[]byte); ok {
				b := (*h)[:0]
				*h = nil
				holders.Put(h)
				return b
			}
			return make([]byte, 0, c)
		}
	}
	return make([]byte, 0, n)
}

// putBuffer gives b back for reuse; nothing may use it afterwards.
func putBuffer(b []byte) {
	for i := len(bufferClasses) - 1; i >= 0; i-- {
		if cap(b) == bufferClasses[i] {
			h, _ := holders.Get().(*[]byte)
			if h == nil {
				h = new([]byte)
			}
			*h = b[:0]
			bufferPools[i].Put(h)
			return
		}
	}
}
