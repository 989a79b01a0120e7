// Command enricherbench measures the enricher process against the dev
// broker, redis-server and the local CRM server (tools/crmserver, with
// -crm-latency per request), for a warm cache (events from a few known
// accounts) and a cold one (every event from an account never seen), with
// a passthrough baseline in the same run:
//
//  1. passthrough: the same -n events on a topic of their own, consumed by
//     a kafka-go consumer group that produces each record unchanged
//     (acks=all) and commits after — what the enricher's Kafka work costs
//     without the enrichment (stack.Passthrough, as the normalizer's and
//     sink-warehouse's benches run it);
//
//  2. throughput: -n (warm) or -cold-n (cold) events already on
//     feedback.normalized.v1, drained by one enricher process, measured
//     from outside from the first poll that finds output to the one that
//     finds all of it: events/s, and the CPU per event of the enricher,
//     the broker and redis-server over the same window (start-up is not
//     counted), each as a ratio to the passthrough's;
//
//  3. added latency: events produced live at -rate per second, each
//     stamped normalized_at when produced; enriched_at − normalized_at of
//     every event on the lanes gives p50/p99 (one clock).
//
//     go run ./tools/enricherbench -n 100000 -cold-n 20000 -rate 200
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

func main() {
	n := flag.Int("n", 100000, "events of the warm-cache throughput run and of the passthrough")
	coldN := flag.Int("cold-n", 20000, "events of the cold-cache throughput run (each costs a CRM request)")
	rate := flag.Int("rate", 200, "events per second in the latency runs")
	seconds := flag.Int("seconds", 10, "length of each latency run")
	crmLatency := flag.Duration("crm-latency", 20*time.Millisecond, "latency of every CRM answer")
	baseline := flag.Bool("passthrough", true, "also run the passthrough baseline (consume, produce unchanged, commit) on the same events")
	passthroughOf := flag.String("passthrough-of", "", "internal: run as the passthrough process, BROKERS")
	var env stack.EnvFlags
	flag.Var(&env, "env", "extra NAME=VALUE for the enricher (repeatable), e.g. -env CONSUMER_WORKERS=1")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *passthroughOf != "" {
		if err := stack.Passthrough(ctx, strings.Split(*passthroughOf, ","), "bench-passthrough", passIn, passOut, 500); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if *n < 1000 || *coldN < 1000 {
		fmt.Fprintln(os.Stderr, "enricherbench: -n and -cold-n must be at least 1000: shorter runs are over before they can be measured")
		os.Exit(2)
	}
	fmt.Printf("host: %s\n", stack.MeasureHost(time.Second))
	if err := run(ctx, options{n: *n, coldN: *coldN, rate: *rate, seconds: *seconds, crmLatency: *crmLatency, baseline: *baseline, env: env}); err != nil {
		fmt.Fprintln(os.Stderr, "enricherbench:", err)
		os.Exit(1)
	}
}

type options struct {
	n, coldN, rate, seconds int
	crmLatency              time.Duration
	baseline                bool
	env                     []string
}

const (
	coldAccounts = 200000
	partitions   = 6
	// The passthrough's topics.
	passIn  = "bench.passthrough.in.v1"
	passOut = "bench.passthrough.out.v1"
)

// window is one throughput run measured from outside: from the first poll
// that found output to the poll that found all of it, the records that
// came out in between and the CPU each process used meanwhile. Start-up
// and the group join are outside it.
type window struct {
	name                    string
	records                 int64
	elapsed                 time.Duration
	cpu, brokerCPU, redisCP float64 // seconds
	batches, batchRecords   float64 // handler calls and their records (the enricher's metrics)
}

func (w window) perSec() float64 { return float64(w.records) / w.elapsed.Seconds() }
func (w window) perEvent(cpu float64) float64 {
	return cpu / float64(w.records) * 1e6
}

// measure polls the end offsets of topics every 10 ms until they hold want
// records. cpu is the CPU seconds of the processes under test so far; alive
// says why they stopped, if they did.
func measure(ctx context.Context, client *kafka.Client, topics []string, want int64, cpu func() float64, broker, redis int, alive func() error) (window, error) {
	var w window
	var got0 int64
	var t0 time.Time
	var cpu0, b0, r0 float64
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if err := alive(); err != nil {
			return w, err
		}
		ends, err := stack.PartitionEnds(ctx, client, topics, partitions)
		if err != nil {
			return w, err
		}
		var got int64
		for _, es := range ends {
			for _, e := range es {
				got += e
			}
		}
		now := time.Now()
		if got > 0 && t0.IsZero() {
			got0, t0, cpu0, b0, r0 = got, now, cpu(), stack.CPUSeconds(broker), stack.CPUSeconds(redis)
		}
		if got >= want {
			w.records, w.elapsed = got-got0, now.Sub(t0)
			w.cpu, w.brokerCPU, w.redisCP = cpu()-cpu0, stack.CPUSeconds(broker)-b0, stack.CPUSeconds(redis)-r0
			if w.records < want/2 {
				return w, fmt.Errorf("%d of the %d records were out before the first look: too short a run to measure (raise -n)", got0, want)
			}
			return w, nil
		}
		if now.After(deadline) || ctx.Err() != nil {
			return w, fmt.Errorf("%d of %d records out after 10 minutes", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w window) print() {
	fmt.Printf("%s: %d events in %s (from the first output seen): %.0f events/s; CPU per event: %.1f µs (%.0f %% of a core), broker %.1f µs, redis-server %.1f µs",
		w.name, w.records, w.elapsed.Round(time.Millisecond), w.perSec(), w.perEvent(w.cpu), w.cpu/w.elapsed.Seconds()*100,
		w.perEvent(w.brokerCPU), w.perEvent(w.redisCP))
	if w.batches > 0 {
		fmt.Printf("; %.1f records per handler call", w.batchRecords/w.batches)
	}
	fmt.Println()
}

func run(ctx context.Context, o options) error {
	dir, bin, cleanup, err := stack.Workspace(ctx, "enricherbench")
	if err != nil {
		return err
	}
	defer cleanup()
	// The CRM knows 8 warm accounts and coldAccounts cold ones.
	type account struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Domain string `json:"domain"`
		Tier   string `json:"tier"`
		ARR    int    `json:"arr"`
	}
	var accounts []account
	tiers := []string{"enterprise", "mid-market", "growth", "starter"}
	for i := range 8 {
		accounts = append(accounts, account{ID: "w" + strconv.Itoa(i), Name: "Warm " + strconv.Itoa(i), Domain: "warm" + strconv.Itoa(i) + ".example", Tier: tiers[i%4], ARR: 1000 * i})
	}
	for i := range coldAccounts {
		accounts = append(accounts, account{ID: "c" + strconv.Itoa(i), Name: "Cold " + strconv.Itoa(i), Domain: "cold" + strconv.Itoa(i) + ".example", Tier: tiers[i%4], ARR: i})
	}
	data, _ := json.Marshal(map[string]any{"accounts": accounts})
	dataPath := filepath.Join(dir, "crm.json")
	if err := os.WriteFile(dataPath, data, 0o644); err != nil {
		return err
	}
	crm, crmURL, err := stack.StartCRM(ctx, bin, dir, "-data", dataPath, "-latency", o.crmLatency.String())
	if err != nil {
		return err
	}
	defer crm.Stop()
	redis, err := localinfra.StartRedis(ctx, dir)
	if err != nil {
		return err
	}
	defer redis.Stop()
	broker, err := stack.StartBroker(ctx, bin, dir, 0, partitions, nil)
	if err != nil {
		return err
	}
	defer broker.Stop()
	client := kafkaio.NewClient([]string{broker.Addrs}, 5*time.Second)
	fmt.Printf("CRM answers after %s; lookup rate limit 5000/s, 16 requests in flight per lookup and batch\n\n", o.crmLatency)

	cold := 0 // next never-seen account
	domainOf := func(warm bool, i int) string {
		if warm {
			return "warm" + strconv.Itoa(i%8) + ".example"
		}
		cold++
		return "cold" + strconv.Itoa(cold%coldAccounts) + ".example"
	}

	var results []window
	if o.baseline {
		w, err := passthrough(ctx, bin, dir, broker, redis.PID(), client, o.n, func(i int) string { return domainOf(true, i) })
		if err != nil {
			return fmt.Errorf("passthrough: %w", err)
		}
		w.print()
		fmt.Println()
		results = append(results, w)
	}
	for round, warm := range []bool{true, false} {
		name := map[bool]string{true: "warm", false: "cold"}[warm]
		n := map[bool]int{true: o.n, false: o.coldN}[warm]
		p := &stack.Pipeline{Name: "b" + strconv.Itoa(round), BinDir: bin, Dir: filepath.Join(dir, name), Brokers: broker.Addrs,
			Redis: redis.Addr, CRMURL: crmURL, Run: []string{"enricher"}, Env: append([]string{"LOG_LEVEL=warn", "KAFKA_TOPIC_PARTITIONS=6"}, o.env...),
			LookupRatePerSecond: 5000}
		topics := kafkaio.NewTopics(p.TopicPrefix())
		if err := kafkaio.EnsureTopics(ctx, []string{broker.Addrs}, topics.All(), true, kafkaio.TopicSpec{Partitions: partitions}); err != nil {
			return err
		}
		w := sender{p: kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: []string{broker.Addrs}, BatchSize: 1000}), topic: topics.Normalized}
		total := n
		if warm {
			// Warm the cache: one event per warm account goes through first.
			if err := produce(ctx, w, 0, 8, func(i int) string { return domainOf(true, i) }); err != nil {
				return err
			}
			total += 8
		}
		if err := produce(ctx, w, 8, n, func(i int) string { return domainOf(warm, i) }); err != nil {
			return err
		}
		if err := p.Start(ctx); err != nil {
			_ = p.Stop()
			return err
		}
		enricher := p.Services["enricher"]
		lanes := []string{topics.Enriched, topics.Priority}
		res, err := measure(ctx, client, lanes, int64(total), func() float64 { return stack.CPUSeconds(enricher.PID()) }, broker.PID(), redis.PID(),
			func() error {
				if !enricher.Running() {
					return fmt.Errorf("the enricher exited:\n%s", enricher.Tail(20))
				}
				return nil
			})
		if err != nil {
			_ = p.Stop()
			return fmt.Errorf("%s cache: %w", name, err)
		}
		res.name = "enricher, " + name + " cache"
		res.batches, res.batchRecords = stack.MetricSumCount("http://"+p.OpsAddrs["enricher"]+"/metrics", "closedloop_consumer_batch_size")
		res.print()
		fmt.Printf("enricher peak RSS %d MiB\n", stack.PeakRSSKiB(enricher.PID())/1024)
		results = append(results, res)

		// Added latency at a steady rate.
		from, err := stack.PartitionEnds(ctx, client, lanes, partitions)
		if err != nil {
			return err
		}
		var lat []time.Duration
		done := make(chan error, 1)
		want := o.rate * o.seconds
		go func() {
			err := drain(ctx, broker.Addrs, from, want, func(ev *feedbackv1.FeedbackEvent) {
				if ev.GetEnrichment().GetEnrichedAt() != nil && ev.NormalizedAt != nil && strings.HasPrefix(ev.Subject.Id, "live") {
					lat = append(lat, ev.Enrichment.EnrichedAt.AsTime().Sub(ev.NormalizedAt.AsTime()))
				}
			})
			done <- err
		}()
		// Each event has a due time (a ticker drops ticks on a busy machine
		// and under-sends) and is stamped normalized_at with it, so a late
		// send counts in its latency. Every event due is sent at once, in one
		// write (a synchronous write takes a few ms: one at a time would fall
		// behind). The rate achieved is printed, and below 97 % of the asked
		// rate the run fails: its latencies would not describe it.
		interval := time.Second / time.Duration(o.rate)
		sendStart := time.Now()
		var msgs []kafkaio.Record
		for i := 0; i < want; {
			due := sendStart.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			msgs = msgs[:0]
			for ; i < want && !sendStart.Add(time.Duration(i)*interval).After(time.Now()); i++ {
				ev := event("live"+strconv.Itoa(i), domainOf(warm, i), sendStart.Add(time.Duration(i)*interval))
				v, _ := proto.Marshal(ev)
				msgs = append(msgs, kafkaio.Record{Topic: w.topic, Key: []byte("bench/" + ev.Subject.Id), Value: v})
			}
			if err := w.p.Produce(ctx, msgs...); err != nil {
				return err
			}
		}
		achieved := float64(want) / time.Since(sendStart).Seconds()
		fmt.Printf("sent %d live events: %.0f/s achieved (asked %d/s)\n", want, achieved, o.rate)
		if err := <-done; err != nil {
			return err
		}
		if achieved < 0.97*float64(o.rate) {
			return fmt.Errorf("the latency run sent %.0f events/s, below the %d/s asked for: its latencies do not describe that rate", achieved, o.rate)
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		if len(lat) > 0 {
			fmt.Printf("%s cache: added latency at %d events/s over %d events: p50 %s, p90 %s, p99 %s, max %s\n\n", name, o.rate, len(lat),
				lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)*9/10].Round(100*time.Microsecond),
				lat[len(lat)*99/100].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
		}
		_ = w.p.Close()
		if err := p.Stop(); err != nil {
			return err
		}
	}

	fmt.Printf("%-32s %10s %14s  %s\n", "", "events/s", "CPU µs/event", "vs the passthrough (throughput, CPU per event)")
	for _, r := range results {
		line := fmt.Sprintf("%-32s %10.0f %14.1f", r.name, r.perSec(), r.perEvent(r.cpu))
		if o.baseline && r.name != results[0].name {
			line += fmt.Sprintf("  %.2f×, %.2f×", r.perSec()/results[0].perSec(), r.perEvent(r.cpu)/results[0].perEvent(results[0].cpu))
			if strings.HasSuffix(r.name, "cold cache") {
				line += " (bounded by the CRM's answers, not by the enricher)"
			}
		}
		fmt.Println(line)
	}
	return nil
}

// passthrough puts the warm run's events on a topic of their own and
// measures one passthrough process (this binary, -passthrough-of) copying
// them to another.
func passthrough(ctx context.Context, bin, dir string, broker *stack.Broker, redisPID int, client *kafka.Client, n int, domain func(int) string) (window, error) {
	if err := kafkaio.EnsureTopics(ctx, []string{broker.Addrs}, []string{passIn, passOut}, true, kafkaio.TopicSpec{Partitions: partitions}); err != nil {
		return window{}, err
	}
	w := sender{p: kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: []string{broker.Addrs}, BatchSize: 1000}), topic: passIn}
	defer w.p.Close()
	if err := produce(ctx, w, 8, n, domain); err != nil {
		return window{}, err
	}
	self, err := os.Executable()
	if err != nil {
		return window{}, err
	}
	pr := &stack.Process{Name: "passthrough", Baseline: true, Bin: self, Args: []string{"-passthrough-of", broker.Addrs}, Log: filepath.Join(dir, "passthrough.log")}
	if err := pr.Start(); err != nil {
		return window{}, err
	}
	defer func() { _ = pr.Stop() }()
	res, err := measure(ctx, client, []string{passOut}, int64(n), func() float64 { return stack.CPUSeconds(pr.PID()) }, broker.PID(), redisPID,
		func() error {
			if !pr.Running() {
				return fmt.Errorf("the passthrough exited:\n%s", pr.Tail(20))
			}
			return nil
		})
	res.name = "passthrough (kafka-go)"
	return res, err
}

func event(id, domain string, at time.Time) *feedbackv1.FeedbackEvent {
	comment := "Slow exports."
	return &feedbackv1.FeedbackEvent{
		EventId: "bench-" + id, Source: "bench", Provider: "delighted", Kind: feedbackv1.Kind_KIND_RESPONSE_CREATED,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: id},
		Version: timestamppb.New(at), OccurredAt: timestamppb.New(at), ReceivedAt: timestamppb.New(at), NormalizedAt: timestamppb.New(at),
		Score: &feedbackv1.Score{Value: 4, Max: 10}, Segment: feedbackv1.Segment_SEGMENT_DETRACTOR, Comment: &comment,
		Respondent: &feedbackv1.Respondent{Email: "pat@" + domain}, RawPayload: make([]byte, 1200),
	}
}

// sender produces the bench's events to one topic (acks=all, keyed by subject).
type sender struct {
	p     *kafkaio.Producer
	topic string
}

func produce(ctx context.Context, w sender, from, n int, domain func(int) string) error {
	recs := make([]kafkaio.Record, 0, 1000)
	now := time.Now()
	for i := from; i < from+n; i++ {
		ev := event("b"+strconv.Itoa(i), domain(i), now)
		v, _ := proto.Marshal(ev)
		recs = append(recs, kafkaio.Record{Topic: w.topic, Key: []byte("bench/" + ev.Subject.Id), Value: v})
		if len(recs) == cap(recs) || i == from+n-1 {
			if err := w.p.Produce(ctx, recs...); err != nil {
				return err
			}
			recs = recs[:0]
		}
	}
	return nil
}

// drain reads every partition of the lanes from its offset in from until
// want records came in all, calling each for every record (one goroutine at
// a time). It reads only what came after from: re-reading the throughput
// run's records would take the CPU the enricher's latency is measured on.
func drain(ctx context.Context, broker string, from map[string][]int64, want int, each func(*feedbackv1.FeedbackEvent)) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var mu sync.Mutex
	got := 0
	errs := make(chan error, len(from)*partitions)
	var wg sync.WaitGroup
	for topic, offs := range from {
		for part, off := range offs {
			r := kafkaio.NewReader(kafka.ReaderConfig{Brokers: []string{broker}, Topic: topic, Partition: part,
				MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 50 * time.Millisecond})
			if err := r.SetOffset(off); err != nil {
				_ = r.Close()
				return err
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer r.Close()
				for {
					m, err := r.ReadMessage(ctx)
					if err != nil {
						if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
							errs <- fmt.Errorf("%s/%d: %w", topic, part, err)
							cancel() // the others need not wait out the timeout
						}
						return
					}
					var ev feedbackv1.FeedbackEvent
					mu.Lock()
					if proto.Unmarshal(m.Value, &ev) == nil {
						each(&ev)
					}
					got++
					if got == want {
						cancel()
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if got >= want {
		return nil
	}
	select {
	case err := <-errs:
		return fmt.Errorf("after %d of %d records: %w", got, want, err)
	default:
		return fmt.Errorf("after %d of %d records: %w", got, want, ctx.Err())
	}
}
