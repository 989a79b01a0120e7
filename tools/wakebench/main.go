// Command wakebench measures what a wake-up from idle costs on this machine,
// against the hand-offs between goroutines that follow it: a goroutine woken
// by a ticker (the stand-in for an answer arriving on an idle socket) passes
// a message through a chain of goroutines and waits for the answer, at a
// rate where the process is otherwise idle. It prints the process's CPU per
// round for each chain length: if the length barely matters, the cost of a
// stage at moderate rates is its wake-ups, and fewer of them (bigger
// batches), not cheaper hand-offs, is what lowers the CPU per event.
//
//	go run ./tools/wakebench [-rate 1000] [-d 3s]
package main

import (
	"flag"
	"fmt"
	"syscall"
	"time"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	rate := flag.Int("rate", 1000, "rounds per second")
	d := flag.Duration("d", 3*time.Second, "length of each measurement")
	flag.Parse()
	for _, hops := range []int{0, 1, 2, 4, 8} {
		in := make(chan chan struct{})
		cur := in
		for range hops {
			next := make(chan chan struct{})
			go func(from, to chan chan struct{}) {
				for done := range from {
					to <- done
				}
				close(to)
			}(cur, next)
			cur = next
		}
		go func(last chan chan struct{}) {
			for done := range last {
				done <- struct{}{}
			}
		}(cur)
		t := time.NewTicker(time.Second / time.Duration(*rate))
		start, c0 := time.Now(), cpu()
		n := 0
		for time.Since(start) < *d {
			<-t.C
			done := make(chan struct{})
			in <- done
			<-done
			n++
		}
		used := cpu() - c0
		t.Stop()
		close(in)
		fmt.Printf("woken by a ticker, %d goroutine hand-offs and back: %d rounds (%.0f/s achieved), %.1f µs of CPU per round\n",
			hops, n, float64(n)/time.Since(start).Seconds(), float64(used)/float64(n)/1e3)
	}
}
