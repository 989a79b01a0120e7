package localinfra

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

// FreePort never returns a port twice in one process, from any goroutine:
// the kernel often gives a just-closed port to the next caller (500 plain
// listen-and-close calls here repeat one almost every time), and two
// services of parallel pipelines were handed one port.
func TestFreePortNeverReturnsAPortTwice(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]bool{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 125 {
				port, err := FreePort()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[port] {
					t.Errorf("port %d returned twice", port)
				}
				seen[port] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("the port FreePort returned is not free: %v", err)
	}
	_ = l.Close()
}
