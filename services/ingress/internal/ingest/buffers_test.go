package ingest

import "testing"

// A buffer given back is handed out again, empty, with its class's
// capacity; one larger than every class is not kept.
func TestABufferGivenBackIsHandedOutAgain(t *testing.T) {
	reused := 0
	for range 50 { // the race detector's pools drop a quarter of what they are given
		b := append(getBuffer(1500), "payload"...)
		first := &b[0]
		putBuffer(b)
		c := getBuffer(1500)
		if len(c) != 0 || cap(c) != bufferClasses[0] {
			t.Fatalf("getBuffer(1500) = len %d cap %d, want len 0 cap %d", len(c), cap(c), bufferClasses[0])
		}
		if &c[:1][0] == first {
			reused++
		}
		putBuffer(c)
	}
	if reused == 0 {
		t.Fatal("no buffer given back was handed out again")
	}
	big := getBuffer(100 << 10)
	if cap(big) != 100<<10 {
		t.Fatalf("getBuffer(100 KiB) has capacity %d", cap(big))
	}
	putBuffer(big) // not a class: left to the collector
	if c := getBuffer(100 << 10); cap(c) == 0 || &c[:1][0] == &big[:1][0] {
		t.Fatal("a buffer larger than every class was kept")
	}
}
