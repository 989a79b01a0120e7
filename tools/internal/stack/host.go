package stack

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Host is what this machine charges for the work that dominates a service's
// CPU at moderate rates: entering the kernel and waking from idle. The same
// code used 1.7 times the CPU per event on one of this project's VMs as on
// another, and on the slower one (a PVM guest) both costs were several times
// what bare metal charges (docs/benchmarks.md, thirteenth and fourteenth
// passes): absolute figures compare only between runs on hosts with similar
// costs.
type Host struct {
	Model      string        // /proc/cpuinfo's model name ("?" when unknown)
	CPUs       int           // runtime.NumCPU
	Virtual    bool          // the CPU's "hypervisor" flag
	Syscall    time.Duration // CPU time of one getppid system call
	Wake       time.Duration // CPU time of one wake-up from idle: a timer, then a round trip to another goroutine
	WakeRounds int           // wake-ups measured
}

// MeasureHost measures Host, taking about d (at least 100 ms of it for the
// wake-ups, which run at 1,000/s so that the process idles between them).
// Each cost is the least of five measurements, so that another process
// running for a moment does not inflate it; run it on a quiet machine.
func MeasureHost(d time.Duration) Host {
	h := Host{Model: "?", CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		h.Model, h.Virtual = parseCPUInfo(string(b))
	}
	const tries, calls = 5, 20_000
	part := max(d, 100*time.Millisecond) / tries
	for i := range tries {
		c0 := SelfCPU()
		for range calls {
			syscall.Getppid()
		}
		sc := (SelfCPU() - c0) / calls
		w, n := WakeCost(part, 1000, 0)
		if i == 0 || sc < h.Syscall {
			h.Syscall = sc
		}
		if i == 0 || w < h.Wake {
			h.Wake = w
		}
		h.WakeRounds += n
	}
	return h
}

// String is the host in one line.
func (h Host) String() string {
	virt := ""
	if h.Virtual {
		virt = ", virtual"
	}
	return fmt.Sprintf("%s, %d CPUs%s; a system call %.2f µs of CPU, a wake-up from idle %.1f µs (the least of five measurements, %d wake-ups in all)",
		h.Model, h.CPUs, virt, float64(h.Syscall)/1e3, float64(h.Wake)/1e3, h.WakeRounds)
}

// parseCPUInfo is /proc/cpuinfo's first model name and whether its flags
// include "hypervisor".
func parseCPUInfo(s string) (model string, virtual bool) {
	model = "?"
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if model == "?" {
				model = strings.TrimSpace(v)
			}
		case "flags":
			for _, f := range strings.Fields(v) {
				if f == "hypervisor" {
					virtual = true
				}
			}
		}
	}
	return model, virtual
}

// WakeCost is the process's CPU time per round of: a ticker wakes a
// goroutine at rate per second, which passes a message through hops other
// goroutines and waits for the answer; for d. At a rate where the process
// is otherwise idle this is the cost of a wake-up (timer, epoll, futex),
// which is what a stage pays a handful of times per batch.
func WakeCost(d time.Duration, rate, hops int) (perRound time.Duration, rounds int) {
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
	defer close(in)
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
	start, c0 := time.Now(), SelfCPU()
	for time.Since(start) < d {
		<-t.C
		done := make(chan struct{})
		in <- done
		<-done
		rounds++
	}
	return (SelfCPU() - c0) / time.Duration(max(rounds, 1)), rounds
}

// SelfCPU is this process's user and system CPU time (getrusage: finer than
// CPUSeconds's clock ticks).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
