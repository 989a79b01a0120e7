// Command sinkbench measures the sink-warehouse service as processes: it
// fills feedback.enriched.v1 on the dev broker with -n FeedbackEvents, starts
// sink-warehouse (-procs of them, one run per count) against a fresh
// PostgreSQL, and times it from its first row to the last; then it checks
// every event is exactly one row. First, on the same input, the passthrough
// baseline (consume with kafka-go, produce each record unchanged to a topic,
// commit) gives the ratio.
//
//	go run ./tools/sinkbench -n 100000 -procs 1,2,3
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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

func main() {
	n := flag.Int("n", 100000, "events on the enriched topic")
	partitions := flag.Int("partitions", 6, "partitions per topic")
	procs := flag.String("procs", "1", "sink-warehouse processes, one run per comma-separated count (e.g. 1,2,3: scaling)")
	baseline := flag.Bool("passthrough", true, "also run the passthrough baseline on the same input")
	passthroughOf := flag.String("passthrough-of", "", "internal: run as the passthrough process, BROKERS")
	var env stack.EnvFlags
	flag.Var(&env, "env", "NAME=value added to the sink's environment (repeatable)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *passthroughOf != "" {
		if err := stack.Passthrough(ctx, strings.Split(*passthroughOf, ","), "bench-passthrough", kafkaio.NewTopics("").Enriched, passTopic, 500); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	fmt.Printf("host: %s\n", stack.MeasureHost(time.Second))
	counts, err := stack.ParseCounts(*procs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sinkbench: -procs:", err)
		os.Exit(2)
	}
	_, bin, cleanup, err := stack.Workspace(ctx, "sinkbench")
	if err != nil {
		fmt.Fprintln(os.Stderr, "sinkbench:", err)
		os.Exit(1)
	}
	defer cleanup()
	type result struct {
		name      string
		perSec    float64
		cpuPerRow float64
	}
	var results []result
	if *baseline {
		counts = append([]int{0}, counts...)
	}
	for _, k := range counts {
		name, perSec, cpu, err := run(ctx, bin, *n, *partitions, k, env)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sinkbench:", err)
			os.Exit(1)
		}
		results = append(results, result{name, perSec, cpu})
	}
	fmt.Printf("\n%-28s %10s %14s %s\n", "", "events/s", "CPU µs/event", "vs passthrough (throughput, CPU/event)")
	for _, r := range results {
		line := fmt.Sprintf("%-28s %10.0f %14.1f", r.name, r.perSec, r.cpuPerRow)
		if *baseline && r.name != results[0].name {
			line += fmt.Sprintf("  %.2f×, %.2f×", r.perSec/results[0].perSec, r.cpuPerRow/results[0].cpuPerRow)
		}
		fmt.Println(line)
	}
}

const passTopic = "bench.passthrough.v1"

// run fills a fresh enriched topic and runs procs sink-warehouse processes
// on it (0: the passthrough instead) until every event is out; it returns
// the events per second and the CPU per event of the processes under test.
func run(ctx context.Context, bin string, n, partitions, procs int, env []string) (string, float64, float64, error) {
	dir, err := os.MkdirTemp("", "sinkbench-run-")
	if err != nil {
		return "", 0, 0, err
	}
	defer os.RemoveAll(dir)
	topics := kafkaio.NewTopics("")
	broker, err := stack.StartBroker(ctx, bin, dir, 0, partitions, append(topics.All(), passTopic))
	if err != nil {
		return "", 0, 0, err
	}
	defer broker.Stop()
	pg, err := localinfra.StartPostgres(ctx)
	if err != nil {
		return "", 0, 0, err
	}
	defer pg.Stop()

	fmt.Printf("filling %s with %d events, %d partitions…\n", topics.Enriched, n, partitions)
	w := kafkaio.NewWriter([]string{broker.Addrs}, topics.Enriched)
	w.Balancer, w.BatchTimeout, w.BatchSize = &kafka.Hash{}, 5*time.Millisecond, 1000
	defer w.Close()
	now := time.Now()
	msgs := make([]kafka.Message, 0, 1000)
	for i := range n {
		comment := "The export keeps timing out; support was quick though."
		ev := &feedbackv1.FeedbackEvent{
			EventId: "bench-" + strconv.Itoa(i), Source: "delighted", Provider: "delighted", ProviderEventType: "survey_response.created",
			Kind:    feedbackv1.Kind_KIND_RESPONSE_CREATED,
			Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: strconv.Itoa(i)},
			Version: timestamppb.New(now), OccurredAt: timestamppb.New(now), ReceivedAt: timestamppb.New(now), NormalizedAt: timestamppb.New(now),
			Survey: &feedbackv1.Survey{Type: feedbackv1.SurveyType_SURVEY_TYPE_NPS},
			Score:  &feedbackv1.Score{Value: float64(i % 11), Min: 0, Max: 10}, Segment: feedbackv1.Segment_SEGMENT_PASSIVE,
			Comment: &comment, Respondent: &feedbackv1.Respondent{Id: strconv.Itoa(i), Email: "p" + strconv.Itoa(i) + "@example.com", Name: "Pat Doe"},
			Tags: []string{"beta"}, RawPayload: make([]byte, 1200),
		}
		v, _ := proto.Marshal(ev)
		msgs = append(msgs, kafka.Message{Key: []byte("delighted/" + ev.Subject.Id), Value: v})
		if len(msgs) == cap(msgs) || i == n-1 {
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				return "", 0, 0, err
			}
			msgs = msgs[:0]
		}
	}

	if procs == 0 {
		return passthrough(ctx, dir, broker, n, partitions)
	}
	p := &stack.Pipeline{BinDir: bin, Dir: filepath.Join(dir, "logs"), Brokers: broker.Addrs, DatabaseURL: pg.URL,
		Run: []string{"sink-warehouse"}, Env: append([]string{"LOG_LEVEL=warn"}, env...)}
	name := fmt.Sprintf("sink-warehouse × %d", procs)
	fmt.Printf("starting %s…\n", name)
	start := time.Now()
	if err := p.Start(ctx); err != nil {
		_ = p.Stop()
		return "", 0, 0, err
	}
	defer p.Stop()
	names := []string{"sink-warehouse"}
	for range procs - 1 {
		r, err := p.AddReplica(ctx, "sink-warehouse")
		if err != nil {
			return "", 0, 0, err
		}
		names = append(names, r)
	}
	cpu := func() float64 {
		var c float64
		for _, nm := range names {
			c += stack.CPUSeconds(p.Services[nm].PID())
		}
		return c
	}
	pool, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		return "", 0, 0, err
	}
	defer pool.Close()
	// The first row's arrival, then all n: a poll probes the primary key
	// instead of counting the table (stack.Rows).
	watch := &stack.Rows{Pool: pool}
	if err := watch.Wait(ctx, 1, 10*time.Millisecond, 10*time.Minute-time.Since(start)); err != nil {
		return "", 0, 0, err
	}
	first, cpu0, pg0 := time.Now(), cpu(), stack.TreeCPUSeconds(pg.PID())
	if err := watch.Wait(ctx, n, 10*time.Millisecond, 10*time.Minute-time.Since(start)); err != nil {
		return "", 0, 0, err
	}
	took := time.Since(first)
	used, pgUsed := cpu()-cpu0, stack.TreeCPUSeconds(pg.PID())-pg0
	var rows, distinct int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM closedloop.feedback_events`).Scan(&rows, &distinct); err != nil {
		return "", 0, 0, err
	}
	var rss int
	var calls, recs float64
	for _, nm := range names {
		rss = max(rss, stack.PeakRSSKiB(p.Services[nm].PID()))
		c, r := stack.MetricSumCount("http://"+p.OpsAddrs[nm]+"/metrics", "closedloop_consumer_batch_size")
		calls, recs = calls+c, recs+r
	}
	fmt.Printf("%d rows in %s after the first: %.0f rows/s; start to first row %s\n", n, took.Round(time.Millisecond),
		float64(n)/took.Seconds(), first.Sub(start).Round(time.Millisecond))
	fmt.Printf("%s CPU %.1f µs per row (all its processes; %.0f %% of a core), PostgreSQL %.1f µs per row, peak RSS %.1f MiB (largest process), %.1f rows per handler call\n",
		name, used*1e6/float64(n), used/took.Seconds()*100, pgUsed*1e6/float64(n), float64(rss)/1024, recs/max(calls, 1))
	fmt.Printf("rows %d, distinct event ids %d (want %d and %d)\n\n", rows, distinct, n, n)
	if rows != n || distinct != n {
		return "", 0, 0, fmt.Errorf("rows do not match the events")
	}
	return name, float64(n) / took.Seconds(), used * 1e6 / float64(n), nil
}

// passthrough runs the baseline process until the passthrough topic holds
// the n events.
func passthrough(ctx context.Context, dir string, broker *stack.Broker, n, partitions int) (string, float64, float64, error) {
	self, _ := os.Executable()
	proc := &stack.Process{Name: "passthrough", Baseline: true, Bin: self, Args: []string{"-passthrough-of", broker.Addrs}, Log: filepath.Join(dir, "passthrough.log")}
	fmt.Println("passthrough (kafka-go)…")
	if err := proc.Start(); err != nil {
		return "", 0, 0, err
	}
	defer func() { _ = proc.Stop() }()
	client := kafkaio.NewClient([]string{broker.Addrs}, 5*time.Second)
	var first time.Time
	var cpu0 float64
	for {
		if !proc.Running() {
			return "", 0, 0, fmt.Errorf("passthrough exited:\n%s", proc.Tail(20))
		}
		got, err := stack.EndOffsets(ctx, client, passTopic, partitions)
		if err != nil {
			return "", 0, 0, err
		}
		if got > 0 && first.IsZero() {
			first, cpu0 = time.Now(), stack.CPUSeconds(proc.PID())
		}
		if got >= int64(n) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(first)
	used := stack.CPUSeconds(proc.PID()) - cpu0
	fmt.Printf("%d events in %s after the first: %.0f events/s, CPU %.1f µs per event\n\n", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), used*1e6/float64(n))
	return "passthrough (kafka-go)", float64(n) / took.Seconds(), used * 1e6 / float64(n), nil
}
