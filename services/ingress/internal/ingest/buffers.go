package ingest

import "sync"

// Bodies and encoded records are the ingress's largest allocations (two
// ~1.5 KiB buffers per webhook, garbage a few milliseconds later); reusing
// them lets the collector run less often. Buffers up to 64 KiB are pooled by
// size class; larger ones are left to the collector, so a rare large body
// does not keep its memory.
var bufferClasses = [...]int{4 << 10, 16 << 10, 64 << 10}

var bufferPools [len(bufferClasses)]sync.Pool

// getBuffer returns an empty buffer of capacity at least n (n ≤ 0: the
// smallest class).
func getBuffer(n int) []byte {
	for i, c := range bufferClasses {
		if n <= c {
			if b, ok := bufferPools[i].Get().(*[]byte); ok {
				return (*b)[:0]
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
			b = b[:0]
			bufferPools[i].Put(&b)
			return
		}
	}
}
