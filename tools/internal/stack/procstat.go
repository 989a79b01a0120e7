package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/closedloop/closedloop/libs/localinfra"
)

// EnvFlags is a repeatable NAME=VALUE command-line flag (flag.Var).
type EnvFlags []string

func (m *EnvFlags) String() string     { return strings.Join(*m, " ") }
func (m *EnvFlags) Set(v string) error { *m = append(*m, v); return nil }

// PeakRSSKiB is a process's peak resident set (VmHWM) in KiB; 0 when unknown.
func PeakRSSKiB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return kb
		}
	}
	return 0
}

// CPUSeconds is a process's user+system CPU time (/proc/<pid>/stat); 0 when unknown.
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// MachineCPU is the machine's CPU time since boot from /proc/stat, in
// seconds summed over its cores: busy (user, nice, system, irq, softirq),
// steal (time the hypervisor ran other guests while this one wanted to
// run) and all (every state, idle included). Zeros when unknown.
type MachineCPU struct{ Busy, Steal, All float64 }

// ReadMachineCPU reads MachineCPU.
func ReadMachineCPU() MachineCPU { return readParsed("/proc/stat", parseMachineCPU) }

// readParsed is parse of the file at path, or T's zero value when it cannot
// be read.
func readParsed[T any](path string, parse func(string) T) T {
	b, err := os.ReadFile(path)
	if err != nil {
		var zero T
		return zero
	}
	return parse(string(b))
}

func parseMachineCPU(stat string) MachineCPU {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(f) < 9 || f[0] != "cpu" {
		return MachineCPU{}
	}
	v := make([]float64, 9)
	for i := 1; i < 9; i++ {
		v[i], _ = strconv.ParseFloat(f[i], 64)
	}
	busy := v[1] + v[2] + v[3] + v[6] + v[7]
	return MachineCPU{Busy: busy / 100, Steal: v[8] / 100, All: (busy + v[4] + v[5] + v[8]) / 100} // USER_HZ
}

// MachinePaging is the machine's paging since boot from /proc/vmstat: major
// page faults (a page read from disk, as when a binary's or a data file's
// page was evicted) and file pages read back soon after the kernel evicted
// them (workingset_refault_file). Either, during a run, means its processes
// waited for the disk: a host that reclaims a guest's page cache (this
// development VM's DAMON "pageout" scheme does) slows every process alike.
// Zeros when unknown.
type MachinePaging struct{ MajorFaults, FileRefaults float64 }

// ReadMachinePaging reads MachinePaging.
func ReadMachinePaging() MachinePaging { return readParsed("/proc/vmstat", parseMachinePaging) }

func parseMachinePaging(vmstat string) MachinePaging {
	var p MachinePaging
	for line := range strings.Lines(vmstat) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "pgmajfault":
			p.MajorFaults = n
		case "workingset_refault_file":
			p.FileRefaults = n
		}
	}
	return p
}

// KeepWorkspace names the environment variable that keeps a benchmark's
// workspace (every process's log) when the benchmark ends, only its
// binaries removed: to read what the services said in a run that went
// wrong.
const KeepWorkspace = "CLOSEDLOOP_BENCH_KEEP"

// Workspace builds every binary into a new temporary directory for a
// benchmark tool; remove it with the returned cleanup (which, with
// KeepWorkspace set, removes the binaries only and says where the rest is).
func Workspace(ctx context.Context, name string) (dir, bin string, cleanup func(), err error) {
	root, err := RepoRoot()
	if err != nil {
		return "", "", nil, err
	}
	dir, err = os.MkdirTemp("", "closedloop-"+name+"-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = workspaceCleanup(dir)
	bin = filepath.Join(dir, "bin")
	fmt.Println("building…")
	if err := Build(ctx, root, bin); err != nil {
		cleanup()
		return "", "", nil, err
	}
	return dir, bin, cleanup, nil
}

// workspaceCleanup removes dir, or with KeepWorkspace set only its
// binaries, saying where the rest is.
func workspaceCleanup(dir string) func() {
	if os.Getenv(KeepWorkspace) == "" {
		return func() { _ = os.RemoveAll(dir) }
	}
	return func() {
		_ = os.RemoveAll(filepath.Join(dir, "bin"))
		fmt.Printf("workspace kept (%s is set): %s\n", KeepWorkspace, dir)
	}
}

// Infra is the dev broker, redis-server and PostgreSQL of a benchmark.
type Infra struct {
	Broker   *Broker
	Redis    *localinfra.Proc
	Postgres *localinfra.Postgres
}

// StartInfra starts the broker (with topics of partitions partitions),
// redis-server and PostgreSQL in dir; Stop stops them.
func StartInfra(ctx context.Context, bin, dir string, partitions int, topics []string) (*Infra, error) {
	broker, err := StartBroker(ctx, bin, dir, 0, partitions, topics)
	if err != nil {
		return nil, err
	}
	in := &Infra{Broker: broker}
	if in.Redis, err = localinfra.StartRedis(ctx, dir); err != nil {
		in.Stop()
		return nil, err
	}
	if in.Postgres, err = localinfra.StartPostgres(ctx); err != nil {
		in.Stop()
		return nil, err
	}
	return in, nil
}

// Stop stops what was started.
func (in *Infra) Stop() {
	if in.Postgres != nil {
		in.Postgres.Stop()
	}
	if in.Redis != nil {
		in.Redis.Stop()
	}
	_ = in.Broker.Stop()
}

// TreeCPUSeconds is the user+system CPU time of a process and of all its
// descendants, living or reaped (PostgreSQL does its work in children):
// the live ones from their /proc/<pid>/stat, the reaped ones from the
// root's cutime and cstime.
func TreeCPUSeconds(root int) float64 {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ppid, _ := strconv.Atoi(fields[1])
		parent[pid] = ppid
	}
	inTree := func(pid int) bool {
		for i := 0; pid > 1 && i < 64; i++ {
			if pid == root {
				return true
			}
			pid = parent[pid]
		}
		return false
	}
	var total float64
	for pid := range parent {
		if inTree(pid) {
			total += CPUSeconds(pid)
		}
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(root) + "/stat"); err == nil {
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		cu, _ := strconv.ParseFloat(fields[13], 64)
		cs, _ := strconv.ParseFloat(fields[14], 64)
		total += (cu + cs) / 100
	}
	return total
}
