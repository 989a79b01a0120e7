package stack

import (
	"math"
	"os"
	"path/filepath"
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

func TestMachinePagingReadsMajorFaultsAndFileRefaults(t *testing.T) {
	got := parseMachinePaging("nr_free_pages 5000\nworkingset_refault_anon 3\nworkingset_refault_file 1544222\npgfault 99\npgmajfault 32465\nbad line\n")
	if want := (MachinePaging{MajorFaults: 32465, FileRefaults: 1544222}); got != want {
		t.Fatalf("parseMachinePaging = %+v, want %+v", got, want)
	}
	if (parseMachinePaging("pgfault 1\n") != MachinePaging{}) {
		t.Fatal("a /proc/vmstat without the two counters should read as zeros")
	}
	if p := ReadMachinePaging(); p.MajorFaults <= 0 {
		t.Fatalf("this machine's /proc/vmstat read as %+v: no major fault since boot", p)
	}
}

func TestAWorkspaceIsRemovedUnlessKeptAndThenOnlyItsBinaries(t *testing.T) {
	fill := func() string {
		dir := t.TempDir()
		for _, f := range []string{"bin/ingress", "logs/ingress.log", "redis.log"} {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	t.Setenv(KeepWorkspace, "")
	dir := fill()
	workspaceCleanup(dir)()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the workspace is still there: %v", err)
	}
	t.Setenv(KeepWorkspace, "1")
	dir = fill()
	workspaceCleanup(dir)()
	if _, err := os.Stat(filepath.Join(dir, "bin")); !os.IsNotExist(err) {
		t.Fatalf("the binaries of a kept workspace are still there: %v", err)
	}
	for _, f := range []string{"logs/ingress.log", "redis.log"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("a kept workspace lost %s: %v", f, err)
		}
	}
}
