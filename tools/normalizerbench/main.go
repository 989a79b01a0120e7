// Command normalizerbench measures the normalizer binary on this machine
// (`make bench-normalizer`). It starts the dev broker and redis-server,
// fills the raw topic with -n signed-and-verified-looking Delighted
// RawWebhooks (~1.5 KiB bodies; -dup of them repeat an earlier event id, as
// provider retries do), then starts one normalizer process and measures how
// long it takes until every unique event is on the normalized topic:
//
//	events/s      unique events normalized per second of wall time
//	records/s     raw records consumed per second (duplicates included)
//	cpu/event     the normalizer's CPU time (user+sys) per raw record
//	peak RSS      the normalizer's VmHWM
//
// The broker, Redis and this tool share the machine's cores with the
// normalizer, as they would on a small node.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

func main() {
	n := flag.Int("n", 200000, "raw records to normalize")
	dup := flag.Float64("dup", 0.2, "fraction of raw records that repeat an earlier event (provider retries)")
	partitions := flag.Int("partitions", 6, "partitions of the raw and normalized topics")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the normalizer (3 s, from the first event) to this file")
	procs := flag.String("procs", "1", "normalizer processes, one run per comma-separated count (e.g. 1,2,3: scaling)")
	baseline := flag.Bool("passthrough", true, "also run the passthrough baseline (consume, produce unchanged, commit) on the same input")
	passthroughOf := flag.String("passthrough-of", "", "internal: run as the passthrough process, BROKERS")
	var env stack.EnvFlags
	flag.Var(&env, "env", "extra NAME=VALUE for the normalizer (repeatable), e.g. -env NORMALIZER_MAX_BATCH=100")
	flag.Parse()
	if *passthroughOf != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if err := stack.Passthrough(ctx, strings.Split(*passthroughOf, ","), "bench-passthrough", rawTopic, passTopic, 500); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	fmt.Printf("host: %s\n", stack.MeasureHost(time.Second))
	counts, err := stack.ParseCounts(*procs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "normalizerbench: -procs:", err)
		os.Exit(2)
	}
	if err := runAll(*n, *dup, *partitions, counts, *baseline, *profile, env); err != nil {
		fmt.Fprintln(os.Stderr, "normalizerbench:", err)
		os.Exit(1)
	}
}

// body is a Delighted survey_response.updated webhook of ~1.5 KiB.
func body(i int) []byte {
	pad := strings.Repeat("Sehr zufrieden mit dem Support, schnelle Antworten. ", 15)
	return fmt.Appendf(nil, `{"event_type":"survey_response.updated","event_id":"evt-%d","event_data":{"id":"%d","person":{"id":"%d","email":"kunde%d@example.de","name":"Jörg Müller","created_at":1763693600},"survey_type":"nps","score":%d,"comment":%q,"permalink":"https://app.delighted.com/r/%d","created_at":1763780000,"updated_at":%d,"person_properties":{"plan":"enterprise","account":{"id":"acct_42","region":"eu-central"},"seats":120},"notes":[],"tags":["bench"],"additional_answers":[{"id":"4","value":{"free_response":null,"scale":null,"select_one":{"id":"opt_1","text":"Price"},"select_many":null},"question":{"id":"enum_z9EvYV","type":"select_one","text":"What matters most?"}}]}}`,
		i, 100000+i, 5000+i%977, i, i%11, pad, 100000+i, 1763780000+i)
}

const (
	rawTopic  = "feedback.raw.v1"
	passTopic = "bench.passthrough.v1"
)

// result is one run's numbers.
type result struct {
	name                 string
	procs                int
	elapsed              time.Duration
	records, events      int
	cpu, brokerCPU, rCPU float64 // seconds
}

func (r result) recordsPerSec() float64 { return float64(r.records) / r.elapsed.Seconds() }
func (r result) cpuPerRecord() float64  { return r.cpu / float64(r.records) * 1e6 }

// runAll runs the passthrough baseline, then the normalizer with each
// process count, each on a fresh broker and Redis filled with the same
// records, and compares them.
func runAll(n int, dupFrac float64, partitions int, counts []int, baseline bool, profile string, extraEnv []string) error {
	ctx := context.Background()
	_, bin, cleanup, err := stack.Workspace(ctx, "normalizerbench")
	if err != nil {
		return err
	}
	defer cleanup()
	var base *result
	if baseline {
		r, err := run(ctx, bin, n, dupFrac, partitions, 0, "", nil)
		if err != nil {
			return fmt.Errorf("passthrough: %w", err)
		}
		base = &r
	}
	var results []result
	for _, k := range counts {
		r, err := run(ctx, bin, n, dupFrac, partitions, k, profile, extraEnv)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	fmt.Printf("\n%-28s %10s %12s %16s %s\n", "", "records/s", "events/s", "CPU µs/record", "vs passthrough (throughput, CPU/record)")
	if base != nil {
		fmt.Printf("%-28s %10.0f %12s %16.1f\n", base.name, base.recordsPerSec(), "-", base.cpuPerRecord())
	}
	for _, r := range results {
		line := fmt.Sprintf("%-28s %10.0f %12.0f %16.1f", r.name, r.recordsPerSec(), float64(r.events)/r.elapsed.Seconds(), r.cpuPerRecord())
		if base != nil {
			line += fmt.Sprintf("  %.2f×, %.2f×", r.recordsPerSec()/base.recordsPerSec(), r.cpuPerRecord()/base.cpuPerRecord())
		}
		fmt.Println(line)
	}
	return nil
}

// run fills a fresh raw topic and runs procs normalizers on it (0: one
// passthrough process instead) until every expected record is out.
func run(ctx context.Context, bin string, n int, dupFrac float64, partitions, procs int, profile string, extraEnv []string) (result, error) {
	res := result{procs: procs, records: n}
	dir, err := os.MkdirTemp("", "normalizerbench-run-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	raw, norm, quar := rawTopic, "feedback.normalized.v1", "feedback.quarantine.v1"
	broker, err := stack.StartBroker(ctx, bin, dir, 0, partitions, []string{raw, norm, quar, passTopic})
	if err != nil {
		return res, err
	}
	defer func() { _ = broker.Stop() }()
	rds, err := localinfra.StartRedis(ctx, dir)
	if err != nil {
		return res, err
	}
	defer rds.Stop()
	brokers := strings.Split(broker.Addrs, ",")

	// Fill the raw topic: event i (0..unique) once, plus repeats of earlier
	// events spread through the stream.
	unique := int(float64(n) * (1 - dupFrac))
	fmt.Printf("filling %s with %d records (%d unique events, %d repeats), %d partitions…\n", raw, n, unique, n-unique, partitions)
	p := kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: brokers, BatchSize: 1000})
	now := timestamppb.Now()
	batch := make([]kafkaio.Record, 0, 1000)
	next, repeats := 0, 0
	for written := 0; written < n; written++ {
		i := next
		// Interleave the repeats evenly among the unique events.
		if next > 0 && (repeats+1)*unique <= next*(n-unique) && repeats < n-unique {
			i = (repeats * 7919) % next
			repeats++
		} else {
			next++
		}
		v, _ := proto.Marshal(&feedbackv1.RawWebhook{
			EventId: "evt-" + strconv.Itoa(i), Source: "delighted", Provider: "delighted", EventType: "survey_response.updated",
			ReceivedAt: now, Body: body(i), Headers: map[string]string{"content-type": "application/json"},
		})
		batch = append(batch, kafkaio.Record{Topic: raw, Key: []byte("delighted/evt-" + strconv.Itoa(i)), Value: v})
		if len(batch) == cap(batch) || written == n-1 {
			if err := p.Produce(ctx, batch...); err != nil {
				return res, err
			}
			batch = batch[:0]
		}
	}
	_ = p.Close()
	unique = next // the interleaving rounds; this is the exact count written

	// The processes under test: procs normalizers, or one passthrough.
	cfg := filepath.Join(dir, "pipeline.yaml")
	_ = os.WriteFile(cfg, []byte("sources:\n  - name: delighted\n    provider: delighted\n    secrets: [env:BENCH_SECRET]\n"), 0o600)
	var under []*stack.Process
	var opsAddrs []string
	out, want := norm, int64(unique)
	res.events = unique
	if procs == 0 {
		self, _ := os.Executable()
		under = append(under, &stack.Process{Name: "passthrough", Baseline: true, Bin: self, Args: []string{"-passthrough-of", broker.Addrs}, Log: filepath.Join(dir, "passthrough.log")})
		out, want, res.events = passTopic, int64(n), n
		res.name = "passthrough (kafka-go)"
	} else {
		res.name = fmt.Sprintf("normalizer × %d", procs)
		for k := range procs {
			ops, _ := localinfra.FreePort()
			grpc, _ := localinfra.FreePort()
			opsAddrs = append(opsAddrs, "127.0.0.1:"+strconv.Itoa(ops))
			under = append(under, &stack.Process{Name: fmt.Sprintf("normalizer-%d", k), Bin: filepath.Join(bin, "normalizer"), Log: filepath.Join(dir, fmt.Sprintf("normalizer-%d.log", k)), Env: append([]string{
				"KAFKA_BROKERS=" + broker.Addrs, "CLOSEDLOOP_SERVICE_TOKEN=" + stack.ServiceToken, "OPS_PPROF=true", "KAFKA_CREATE_TOPICS=true", "REDIS_URL=redis://" + rds.Addr + "/0", "PIPELINE_CONFIG=" + cfg, "BENCH_SECRET=x",
				"OPS_ADDR=127.0.0.1:" + strconv.Itoa(ops), "GRPC_ADDR=127.0.0.1:" + strconv.Itoa(grpc), "LOG_LEVEL=warn", "INSTANCE_ID=bench-" + strconv.Itoa(k),
			}, extraEnv...)})
		}
	}
	fmt.Printf("%s…\n", res.name)
	start := time.Now()
	for _, pr := range under {
		if err := pr.Start(); err != nil {
			return res, err
		}
		defer func() { _ = pr.Stop() }()
	}
	cpuOf := func() float64 {
		var c float64
		for _, pr := range under {
			c += stack.CPUSeconds(pr.PID())
		}
		return c
	}
	client := kafkaio.NewClient(brokers, 5*time.Second)
	var firstAt time.Time
	cpu0, bcpu0, rcpu0 := 0.0, 0.0, 0.0
	for {
		for _, pr := range under {
			if !pr.Running() {
				return res, fmt.Errorf("%s exited:\n%s", pr.Name, pr.Tail(20))
			}
		}
		got, err := stack.EndOffsets(ctx, client, out, partitions)
		if err != nil {
			return res, err
		}
		if got > 0 && firstAt.IsZero() {
			// Process start-up and the group join are not throughput.
			firstAt, cpu0 = time.Now(), cpuOf()
			bcpu0, rcpu0 = stack.CPUSeconds(broker.PID()), stack.CPUSeconds(rds.PID())
			if profile != "" && len(opsAddrs) > 0 {
				go func() { _ = stack.FetchProfile("http://"+opsAddrs[0]+"/debug/pprof/profile?seconds=3", profile) }()
			}
		}
		if got >= want {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return res, fmt.Errorf("only %d of %d records after 10 minutes", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.elapsed = time.Since(firstAt)
	res.cpu = cpuOf() - cpu0
	res.brokerCPU, res.rCPU = stack.CPUSeconds(broker.PID())-bcpu0, stack.CPUSeconds(rds.PID())-rcpu0
	var rss int
	for _, pr := range under {
		rss = max(rss, stack.PeakRSSKiB(pr.PID()))
	}
	time.Sleep(time.Second) // anything beyond the expected count would be a duplicate
	got, err := stack.EndOffsets(ctx, client, out, partitions)
	if err != nil {
		return res, err
	}
	q, _ := stack.EndOffsets(ctx, client, quar, partitions)
	var batches, records float64
	for _, a := range opsAddrs {
		b, r := stack.MetricSumCount("http://"+a+"/metrics", "closedloop_consumer_batch_size")
		batches, records = batches+b, records+r
	}
	fmt.Printf("%d raw records (%d unique) in %.2fs after the first output: %.0f events/s, %.0f records/s\n",
		n, unique, res.elapsed.Seconds(), float64(res.events)/res.elapsed.Seconds(), float64(n)/res.elapsed.Seconds())
	fmt.Printf("%s CPU %.1f µs per raw record (all its processes; %.0f%% of a core), peak RSS %.1f MiB (largest process); start to first output %s\n",
		res.name, res.cpuPerRecord(), res.cpu/res.elapsed.Seconds()*100, float64(rss)/1024, firstAt.Sub(start).Round(time.Millisecond))
	fmt.Printf("meanwhile the dev broker used %.1f µs and redis-server %.1f µs of CPU per raw record (%.0f%% and %.0f%% of a core)\n",
		res.brokerCPU/float64(n)*1e6, res.rCPU/float64(n)*1e6, res.brokerCPU/res.elapsed.Seconds()*100, res.rCPU/res.elapsed.Seconds()*100)
	if batches > 0 {
		fmt.Printf("handler calls: %d, %.1f records per batch on average\n", int(batches), records/batches)
	}
	fmt.Printf("output topic: %d records (%d expected), quarantine: %d\n\n", got, want, q)
	if got != want || q != 0 {
		return res, fmt.Errorf("%s: the output topic does not hold each expected record exactly once", res.name)
	}
	return res, nil
}
