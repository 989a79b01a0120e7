package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/closedloop/closedloop/tools/internal/stack"
)

// account measures what each process of the run spends: the services (with
// their per-stage metrics), the broker, redis-server, PostgreSQL (all its
// backends) and this process (the load generator, the webhook receiver and
// the vendor fakes).
type account struct {
	procs    []accountProc
	services []string
}

type accountProc struct {
	name string
	cpu  func() float64
	ops  string // a service's ops address; "" for the rest
}

type snapshot struct {
	at      time.Time
	cpu     map[string]float64
	m       map[string]stageMetrics
	machine stack.MachineCPU
	paging  stack.MachinePaging
}

// stageMetrics are a service's counters that explain its CPU: records
// handled and handler calls (batch size), Kafka fetch and produce requests.
type stageMetrics struct {
	calls, records, fetches, produces float64
}

func newAccount(p *stack.Pipeline, infra *stack.Infra, services []string) *account {
	a := &account{services: services}
	for _, name := range services {
		pid := p.Services[name].PID()
		a.procs = append(a.procs, accountProc{name: name, cpu: func() float64 { return stack.CPUSeconds(pid) }, ops: p.OpsAddrs[name]})
	}
	bpid, rpid, ppid := infra.Broker.PID(), infra.Redis.PID(), infra.Postgres.PID()
	a.procs = append(a.procs,
		accountProc{name: "broker", cpu: func() float64 { return stack.CPUSeconds(bpid) }},
		accountProc{name: "redis-server", cpu: func() float64 { return stack.CPUSeconds(rpid) }},
		accountProc{name: "postgresql", cpu: func() float64 { return stack.TreeCPUSeconds(ppid) }},
		accountProc{name: "bench", cpu: func() float64 { return stack.CPUSeconds(os.Getpid()) }})
	return a
}

func (a *account) snap() snapshot {
	s := snapshot{at: time.Now(), cpu: map[string]float64{}, m: map[string]stageMetrics{}, machine: stack.ReadMachineCPU(), paging: stack.ReadMachinePaging()}
	for _, p := range a.procs {
		s.cpu[p.name] = p.cpu()
		if p.ops != "" {
			m := stack.Scrape("http://" + p.ops + "/metrics") // once per process and snapshot
			calls, records := m.SumCount("closedloop_consumer_batch_size")
			s.m[p.name] = stageMetrics{calls: calls, records: records, fetches: m.Sum("closedloop_kafka_fetch_requests_total"),
				produces: m.Sum("closedloop_kafka_produce_requests_total")}
		}
	}
	return s
}

// idle prints each process's share of a core over d with no traffic.
func (a *account) idle(d time.Duration) (worst string, share float64) {
	before := a.snap()
	time.Sleep(d)
	after := a.snap()
	secs := after.at.Sub(before.at).Seconds()
	var parts []string
	for _, p := range a.procs {
		pct := (after.cpu[p.name] - before.cpu[p.name]) / secs * 100
		parts = append(parts, fmt.Sprintf("%s %.2f %%", p.name, pct))
		if p.ops != "" && pct > share {
			worst, share = p.name, pct
		}
	}
	fmt.Printf("idle for %s, share of one core: %s\n", d, strings.Join(parts, ", "))
	return worst, share
}

// report prints, between two snapshots over which events went through, each
// process's CPU per event and share of a core, and each service's batch
// sizes and Kafka requests per second.
func (a *account) report(label string, events int, before, after snapshot) {
	secs := after.at.Sub(before.at).Seconds()
	fmt.Printf("%s — CPU per event over %d events (%.1f s):\n", label, events, secs)
	var services, all float64
	for _, p := range a.procs {
		cpu := after.cpu[p.name] - before.cpu[p.name]
		all += cpu
		line := fmt.Sprintf("  %-15s %7.0f µs/event  %5.1f %% of a core", p.name, cpu*1e6/float64(events), cpu/secs*100)
		if p.ops != "" {
			services += cpu
			m0, m1 := before.m[p.name], after.m[p.name]
			if calls := m1.calls - m0.calls; calls > 0 {
				line += fmt.Sprintf("  %6.1f records per handler call", (m1.records-m0.records)/calls)
			}
			line += fmt.Sprintf("  Kafka: %5.0f fetch/s, %5.0f produce requests/s", (m1.fetches-m0.fetches)/secs, (m1.produces-m0.produces)/secs)
		}
		fmt.Println(line)
	}
	fmt.Printf("  %-15s %7.0f µs/event (services only); %.0f µs/event with the broker, Redis, PostgreSQL and the bench process\n",
		"all", services*1e6/float64(events), all*1e6/float64(events))
	if m0, m1 := before.machine, after.machine; m1.All > m0.All {
		// What the processes above do not explain: other processes of this
		// machine, and time the hypervisor gave other guests (steal), which
		// slows every process of a run alike.
		total := m1.All - m0.All
		fmt.Printf("  %-15s %5.1f %% of its CPU time busy (the processes above %.1f %%, others %.1f %%), stolen by the hypervisor %.1f %%\n",
			"machine", (m1.Busy-m0.Busy)/total*100, all/total*100, (m1.Busy-m0.Busy-all)/total*100, (m1.Steal-m0.Steal)/total*100)
	}
	// Pages read back from disk slow every process of the run alike (stack.MachinePaging).
	p0, p1 := before.paging, after.paging
	fmt.Printf("  %-15s %.0f major page faults/s, %.0f evicted file pages read back/s\n",
		"paging", (p1.MajorFaults-p0.MajorFaults)/secs, (p1.FileRefaults-p0.FileRefaults)/secs)
}
