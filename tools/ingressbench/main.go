// Command ingressbench measures the ingress against two references on this
// machine (`make bench-ingress`), in the same run, interleaved over -rounds:
//
//   - the ceiling: a bare server on the ingress's HTTP stack (fasthttp) that
//     only checks the Delighted HMAC and answers 200 (what the machine can
//     do without storing);
//   - the same on net/http ("nethttp"), the stack the ingress left for it;
//   - the naive receiver: HMAC, decode the event id, one synchronous kafka-go
//     WriteMessages per request (acks=all, 2 ms batch timeout), 202;
//   - the ingress binary, with its defaults (acks=all, traces and metrics).
//
// Each runs as its own process beside the dev broker. The load generator
// (this process) writes pre-built, signed ~1.5 KiB Delighted webhooks on 64
// raw keep-alive connections: open loop at a steady -rate (latency, measured
// from when each request was due; every round's steady phases come first,
// while the dev broker holds few records), then closed loop for -duration
// (the most requests per second). Every phase prints each process's CPU per request
// and the load generator's share; an open-loop phase that could not send its
// rate fails the run, and afterwards every 2xx of the ingress and the naive
// receiver must be in their topics.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

const (
	secret     = "bench_delighted_key"
	rawTopic   = "feedback.raw.v1"
	naiveTopic = "bench.naive.v1"
)

func main() {
	serveKind := flag.String("serve", "", "internal: run the ceiling or naive server (-addr, -brokers)")
	serveAddr := flag.String("addr", "", "internal: the server's address")
	brokers := flag.String("brokers", "", "internal: the naive server's brokers")
	var o options
	flag.IntVar(&o.conns, "c", 64, "connections")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each closed-loop phase")
	flag.IntVar(&o.rate, "rate", 1000, "requests per second of the steady (open-loop) phases")
	flag.DurationVar(&o.steady, "steady", 5*time.Second, "length of each steady phase")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every receiver once, interleaved")
	flag.IntVar(&o.maxRPS, "max-rps", 90000, "requests built per second of a closed-loop phase (the most it can send)")
	flag.IntVar(&o.partitions, "partitions", 6, "partitions of the raw topic and the naive receiver's topic")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the ingress during the last closed-loop phase to this file (and its allocations to FILE.allocs)")
	flag.BoolVar(&o.profileSteady, "profile-steady", false, "profile the last steady phase instead")
	flag.StringVar(&o.only, "receivers", "ceiling,nethttp,naive,ingress", "the receivers to run (a comma-separated subset, for experiments)")
	flag.Var(&o.env, "env", "extra NAME=VALUE for the ingress (repeatable), e.g. -env GOMEMLIMIT=48MiB")
	flag.Parse()
	if *serveKind != "" {
		serve(*serveKind, *serveAddr, *brokers)
		return
	}
	fmt.Printf("host: %s\n", stack.MeasureHost(time.Second))
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "ingressbench:", err)
		os.Exit(1)
	}
}

type options struct {
	conns, rate, rounds, maxRPS, partitions int
	duration, steady                        time.Duration
	profile, only                           string
	profileSteady                           bool
	env                                     stack.EnvFlags
}

// receiver is one server under test.
type receiver struct {
	name  string
	proc  *stack.Process
	addr  string
	path  string
	topic string // "" when it stores nothing
	ops   string // the ingress's ops address (pprof)
}

func run(o options) error {
	ctx := context.Background()
	dir, bin, cleanup, err := stack.Workspace(ctx, "ingressbench")
	if err != nil {
		return err
	}
	defer cleanup()
	broker, err := stack.StartBroker(ctx, bin, dir, 0, o.partitions, []string{rawTopic, naiveTopic})
	if err != nil {
		return err
	}
	broker.Name = "broker"
	defer func() { _ = broker.Stop() }()

	cfg := filepath.Join(dir, "pipeline.yaml")
	token := "tok_bench_0123456789abcdefghijklmn"
	_ = os.WriteFile(cfg, []byte("sources:\n  - name: delighted\n    provider: delighted\n    secrets: [env:BENCH_SECRET]\n    ingest_tokens: [env:BENCH_TOKEN]\n    rate_limit: {per_second: 1000000}\n"), 0o600)
	port, _ := localinfra.FreePort()
	ops, _ := localinfra.FreePort()
	grpc, _ := localinfra.FreePort()
	ing := &stack.Process{Name: "ingress", Bin: filepath.Join(bin, "ingress"), Log: filepath.Join(dir, "ingress.log"), Env: []string{
		"KAFKA_BROKERS=" + broker.Addrs, "CLOSEDLOOP_SERVICE_TOKEN=" + stack.ServiceToken, "OPS_PPROF=true", "KAFKA_CREATE_TOPICS=true", "PIPELINE_CONFIG=" + cfg, "BENCH_SECRET=" + secret, "BENCH_TOKEN=" + token,
		"INGRESS_ADDR=127.0.0.1:" + strconv.Itoa(port), "OPS_ADDR=127.0.0.1:" + strconv.Itoa(ops), "GRPC_ADDR=127.0.0.1:" + strconv.Itoa(grpc),
		"LOG_LEVEL=warn",
	}}
	ing.Env = append(ing.Env, o.env...)
	if err := ing.Start(); err != nil {
		return err
	}
	defer func() { _ = ing.Stop() }()
	if err := stack.WaitReady(ctx, ing, "127.0.0.1:"+strconv.Itoa(ops), 30*time.Second); err != nil {
		return err
	}
	self, _ := os.Executable()
	recvs := []*receiver{}
	for _, kind := range []string{"ceiling", "nethttp", "naive"} {
		p, _ := localinfra.FreePort()
		addr := "127.0.0.1:" + strconv.Itoa(p)
		proc := &stack.Process{Name: kind, Baseline: true, Bin: self, Args: []string{"-serve", kind, "-addr", addr, "-brokers", broker.Addrs}, Log: filepath.Join(dir, kind+".log")}
		if err := proc.Start(); err != nil {
			return err
		}
		defer func() { _ = proc.Stop() }()
		if err := localinfra.WaitTCP(ctx, addr, 10*time.Second); err != nil {
			return fmt.Errorf("%s server: %w\n%s", kind, err, proc.Tail(20))
		}
		r := &receiver{name: kind, proc: proc, addr: addr, path: "/hook"}
		if kind == "naive" {
			r.topic = naiveTopic
		}
		recvs = append(recvs, r)
	}
	recvs = append(recvs, &receiver{name: "ingress", proc: ing, addr: "127.0.0.1:" + strconv.Itoa(port),
		path: "/v1/hooks/delighted/" + token, topic: rawTopic, ops: "127.0.0.1:" + strconv.Itoa(ops)})

	recvs = slices.DeleteFunc(recvs, func(r *receiver) bool { return !slices.Contains(strings.Split(o.only, ","), r.name) })
	fmt.Printf("%d-byte Delighted bodies, %d connections; per round: %d req/s for %s, then closed loop %s, for each receiver; %d rounds; %d partitions\n",
		len(body(nil, 1)), o.conns, o.rate, o.steady, o.duration, o.rounds, o.partitions)
	fmt.Printf("machine: %d CPUs; the broker, the receivers and the load generator share them\n\n", runtime.NumCPU())
	var next uint64 = 1 << 40
	take := func(n int) uint64 { first := next; next += uint64(n); return first }
	// Warm-up: connections, the broker's partitions, the page cache.
	for _, r := range recvs {
		rq := build(r.path, take(20000), 20000)
		if _, err := drive("warm-up", r.addr, rq, o.conns, time.Second, 0, nil); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	maxes := map[string][]*phase{}
	steady := map[string][]*phase{}
	accepted := map[string][]uint64{}
	var rssPeak int
	// Every round's steady phases first, then every round's closed loops:
	// the dev broker keeps every record in memory, and its collector's
	// pauses grow with what it holds. With each round's steady phases
	// after the previous round's closed loops (~400k records each), the
	// ingress's p99 at 1,000/s was 1.95, 5.45 and 17.24 ms in rounds 1–3:
	// the dev broker's heap, not the receivers, which real Kafka (records
	// on disk, not in its heap) does not have.
	for round := 1; round <= o.rounds; round++ {
		fmt.Printf("— steady phases, round %d\n", round)
		for _, r := range recvs {
			n := int(float64(o.rate)*o.steady.Seconds()) + 1
			rq := build(r.path, take(n), n)
			if o.profile != "" && r.ops != "" && round == o.rounds && o.profileSteady {
				go profileIngress(r.ops, o.steady, o.profile)
			}
			reqs, recs := produced(r)
			ph, err := drive(fmt.Sprintf("%s @ %d/s", r.name, o.rate), r.addr, rq, o.conns, o.steady, o.rate, []*stack.Process{r.proc, broker.Process})
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			fmt.Println(ph)
			printProduced(r, ph, reqs, recs)
			steady[r.name] = append(steady[r.name], ph)
			accepted[r.name] = append(accepted[r.name], ph.accepted...)
			if got := ph.rps(); got < 0.97*float64(o.rate) {
				return fmt.Errorf("%s: the steady phase sent %.0f req/s, below the %d req/s asked for: its latencies do not describe that rate", r.name, got, o.rate)
			}
		}
	}
	for round := 1; round <= o.rounds; round++ {
		fmt.Printf("— closed loops, round %d\n", round)
		for _, r := range recvs {
			n := int(float64(o.maxRPS) * o.duration.Seconds())
			rq := build(r.path, take(n), n)
			if o.profile != "" && r.ops != "" && round == o.rounds && !o.profileSteady {
				go profileIngress(r.ops, o.duration, o.profile)
			}
			reqs, recs := produced(r)
			ph, err := drive(r.name+" max", r.addr, rq, o.conns, o.duration, 0, []*stack.Process{r.proc, broker.Process})
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			fmt.Println(ph)
			printProduced(r, ph, reqs, recs)
			maxes[r.name] = append(maxes[r.name], ph)
			accepted[r.name] = append(accepted[r.name], ph.accepted...)
		}
		rssPeak = stack.PeakRSSKiB(ing.PID())
	}

	fmt.Println("\n— summary (each: the rounds' values, median first)")
	med := func(ps []*phase, f func(*phase) float64) []float64 {
		var v []float64
		for _, p := range ps {
			v = append(v, f(p))
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return append([]float64{s[len(s)/2]}, v...)
	}
	show := func(label string, v []float64, format string) {
		fmt.Printf("%-44s "+format+"  (", label, v[0])
		for i, x := range v[1:] {
			if i > 0 {
				fmt.Print(" / ")
			}
			fmt.Printf(format, x)
		}
		fmt.Println(")")
	}
	for _, r := range recvs {
		show(r.name+" max req/s", med(maxes[r.name], (*phase).rps), "%.0f")
		show(r.name+" CPU µs per request at max", med(maxes[r.name], func(p *phase) float64 { return p.cpuPerReq(r.name) }), "%.1f")
		show(r.name+" p50 ms at steady rate", med(steady[r.name], func(p *phase) float64 { return float64(p.pct(0.5).Microseconds()) / 1000 }), "%.2f")
		show(r.name+" p99 ms at steady rate", med(steady[r.name], func(p *phase) float64 { return float64(p.pct(0.99).Microseconds()) / 1000 }), "%.2f")
		show(r.name+" CPU µs per request at steady rate", med(steady[r.name], func(p *phase) float64 { return p.cpuPerReq(r.name) }), "%.1f")
	}
	ratio := func(a, b string) []float64 {
		var v []float64
		for i := range maxes[a] {
			v = append(v, maxes[a][i].rps()/maxes[b][i].rps())
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return append([]float64{s[len(s)/2]}, v...)
	}
	if len(maxes["ingress"]) > 0 && len(maxes["naive"]) > 0 {
		show("ingress / naive kafka-go (max req/s)", ratio("ingress", "naive"), "%.2f")
	}
	if len(maxes["ingress"]) > 0 && len(maxes["ceiling"]) > 0 {
		show("ingress / ceiling (max req/s)", ratio("ingress", "ceiling"), "%.2f")
		show("load generator CPU µs per request (ceiling)", med(maxes["ceiling"], func(p *phase) float64 { return p.cpuPerReq("load generator") }), "%.1f")
	}
	if len(maxes["ingress"]) > 0 && len(maxes["nethttp"]) > 0 {
		show("ingress / nethttp ceiling (max req/s)", ratio("ingress", "nethttp"), "%.2f")
	}
	fmt.Printf("%-44s %.1f MiB\n", "ingress peak RSS", float64(rssPeak)/1024)

	for _, r := range recvs {
		if r.topic == "" {
			continue
		}
		found, err := keysIn(ctx, broker.Addrs, r.topic, o.partitions)
		if err != nil {
			return err
		}
		missing := 0
		for _, id := range accepted[r.name] {
			if !found[eventID(id)] {
				missing++
			}
		}
		fmt.Printf("%-44s %d of %d\n", r.name+": 2xx found in Kafka", len(accepted[r.name])-missing, len(accepted[r.name]))
		if missing > 0 {
			return fmt.Errorf("%s: %d acknowledged webhooks are not in Kafka", r.name, missing)
		}
	}
	return nil
}

// produced reads the ingress's produce requests and records so far (its
// natural batcher's batch-size histogram).
func produced(r *receiver) (requests, records float64) {
	if r.ops == "" {
		return 0, 0
	}
	return stack.MetricSumCount("http://"+r.ops+"/metrics", "closedloop_kafka_produce_batch_size")
}

func printProduced(r *receiver, ph *phase, reqs0, recs0 float64) {
	if r.ops == "" {
		return
	}
	reqs, recs := produced(r)
	if reqs == reqs0 {
		return
	}
	fmt.Printf("%-26s Kafka: %.0f produce requests/s, %.1f records per request\n", "", (reqs-reqs0)/ph.elapsed.Seconds(), (recs-recs0)/(reqs-reqs0))
}

// profileIngress writes a CPU profile of the middle half of a phase to path,
// and the ingress's allocations since it started to path.allocs.
func profileIngress(ops string, d time.Duration, path string) {
	time.Sleep(d / 4)
	if err := stack.FetchProfile("http://"+ops+"/debug/pprof/profile?seconds="+strconv.Itoa(max(1, int(d.Seconds()/2))), path); err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
	}
	if err := stack.FetchProfile("http://"+ops+"/debug/pprof/allocs", path+".allocs"); err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
	}
}

// keysIn reads every record key of topic.
func keysIn(ctx context.Context, brokers, topic string, partitions int) (map[string]bool, error) {
	client := kafkaio.NewClient([]string{brokers}, 0)
	out := map[string]bool{}
	for p := range partitions {
		offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(p)}}})
		if err != nil {
			return nil, err
		}
		last := offs.Topics[topic][0].LastOffset
		if last == 0 {
			continue
		}
		if err := readPartition(ctx, brokers, topic, p, last, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readPartition adds the keys of partition p's records before offset end
// to keys. A reader that delivers nothing for 10 s is replaced by a new
// one from the next offset, twice at most: once (2026-12-02, one run in
// six that day) a kafka-go partition reader delivered nothing from the
// dev broker until its deadline, and the run failed at its last check.
func readPartition(ctx context.Context, brokers, topic string, p int, end int64, keys map[string]bool) error {
	next := int64(0)
	for attempt := 1; ; attempt++ {
		r := kafkaio.NewReader(kafka.ReaderConfig{Brokers: []string{brokers}, Topic: topic, Partition: p, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(next); err != nil {
			_ = r.Close()
			return fmt.Errorf("read %s/%d from offset %d: %w", topic, p, next, err)
		}
		var err error
		for next < end {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var m kafka.Message
			m, err = r.ReadMessage(rctx)
			cancel()
			if err != nil {
				break
			}
			keys[string(m.Key)] = true
			next = m.Offset + 1
		}
		_ = r.Close()
		if err == nil {
			return nil
		}
		if attempt == 3 || ctx.Err() != nil {
			return fmt.Errorf("read %s/%d at offset %d of %d (%d readers): %w", topic, p, next, end, attempt, err)
		}
		fmt.Printf("reading %s/%d: nothing for 10 s at offset %d of %d (%v); a new reader\n", topic, p, next, end, err)
	}
}
