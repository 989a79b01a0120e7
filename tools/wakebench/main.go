// Command wakebench measures what a wake-up from idle costs on this machine,
// against the hand-offs between goroutines that follow it: a goroutine woken
// by a ticker (the stand-in for an answer arriving on an idle socket) passes
// a message through a chain of goroutines and waits for the answer, at a
// rate where the process is otherwise idle. It prints the process's CPU per
// round for each chain length: if the length barely matters, the cost of a
// stage at moderate rates is its wake-ups, and fewer of them (bigger
// batches), not cheaper hand-offs, is what lowers the CPU per event. The
// benchmarks print the zero-hop figure as the host's wake-up cost
// (stack.MeasureHost).
//
//	go run ./tools/wakebench [-rate 1000] [-d 3s]
package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/closedloop/closedloop/tools/internal/stack"
)

func main() {
	rate := flag.Int("rate", 1000, "rounds per second")
	d := flag.Duration("d", 3*time.Second, "length of each measurement")
	flag.Parse()
	for _, hops := range []int{0, 1, 2, 4, 8} {
		start := time.Now()
		per, n := stack.WakeCost(*d, *rate, hops)
		fmt.Printf("woken by a ticker, %d goroutine hand-offs and back: %d rounds (%.0f/s achieved), %.1f µs of CPU per round\n",
			hops, n, float64(n)/time.Since(start).Seconds(), float64(per)/1e3)
	}
}
