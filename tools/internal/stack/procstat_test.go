package stack

import (
	"math"
	"testing"
)

func TestMachineCPUSplitsBusyStealAndIdle(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice, in USER_HZ ticks
	got := parseMachineCPU("cpu  600 10 200 1000 40 5 15 30 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
	want := MachineCPU{Busy: 8.30, Steal: 0.30, All: 19.00}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if !near(got.Busy, want.Busy) || !near(got.Steal, want.Steal) || !near(got.All, want.All) {
		t.Fatalf("parseMachineCPU = %+v, want %+v", got, want)
	}
	if (parseMachineCPU("intr 1 2 3\n") != MachineCPU{}) {
		t.Fatal("a /proc/stat without its cpu line should read as unknown")
	}
	if m := ReadMachineCPU(); m.All <= 0 || m.Busy > m.All || m.Steal > m.All {
		t.Fatalf("this machine's /proc/stat read as %+v", m)
	}
}
