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
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	n := flag.Int("n", 200000, "raw records to normalize")
	dup := flag.Float64("dup", 0.2, "fraction of raw records that repeat an earlier event (provider retries)")
	partitions := flag.Int("partitions", 6, "partitions of the raw and normalized topics")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the normalizer (3 s, from the first event) to this file")
	var env stack.EnvFlags
	flag.Var(&env, "env", "extra NAME=VALUE for the normalizer (repeatable), e.g. -env NORMALIZER_MAX_BATCH=100")
	flag.Parse()
	if err := run(*n, *dup, *partitions, *profile, env); err != nil {
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

func run(n int, dupFrac float64, partitions int, profile string, extraEnv []string) error {
	ctx := context.Background()
	dir, bin, cleanup, err := stack.Workspace(ctx, "normalizerbench")
	if err != nil {
		return err
	}
	defer cleanup()
	raw, norm, quar := "feedback.raw.v1", "feedback.normalized.v1", "feedback.quarantine.v1"
	broker, err := stack.StartBroker(ctx, bin, dir, 0, partitions, []string{raw, norm, quar})
	if err != nil {
		return err
	}
	defer func() { _ = broker.Stop() }()
	rds, err := localinfra.StartRedis(ctx, dir)
	if err != nil {
		return err
	}
	defer rds.Stop()
	brokers := strings.Split(broker.Addrs, ",")

	// Fill the raw topic: event i (0..unique) once, plus repeats of earlier
	// events spread through the stream.
	unique := int(float64(n) * (1 - dupFrac))
	fmt.Printf("filling %s with %d records (%d unique events, %d repeats), %d partitions…\n", raw, n, unique, n-unique, partitions)
	p := kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: brokers, BatchSize: 1000, BatchTimeout: 5 * time.Millisecond})
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
				return err
			}
			batch = batch[:0]
		}
	}
	_ = p.Close()
	unique = next // the interleaving rounds; this is the exact count written

	ops, _ := localinfra.FreePort()
	grpc, _ := localinfra.FreePort()
	cfg := filepath.Join(dir, "pipeline.yaml")
	_ = os.WriteFile(cfg, []byte("sources:\n  - name: delighted\n    provider: delighted\n    secrets: [env:BENCH_SECRET]\n"), 0o600)
	normalizer := &stack.Process{Name: "normalizer", Bin: filepath.Join(bin, "normalizer"), Log: filepath.Join(dir, "normalizer.log"), Env: append([]string{
		"KAFKA_BROKERS=" + broker.Addrs, "CLOSEDLOOP_SERVICE_TOKEN=" + stack.ServiceToken, "OPS_PPROF=true", "REDIS_URL=redis://" + rds.Addr + "/0", "PIPELINE_CONFIG=" + cfg, "BENCH_SECRET=x",
		"OPS_ADDR=127.0.0.1:" + strconv.Itoa(ops), "GRPC_ADDR=127.0.0.1:" + strconv.Itoa(grpc), "LOG_LEVEL=warn",
	}, extraEnv...)}
	fmt.Println("normalizing…")
	start := time.Now()
	if err := normalizer.Start(); err != nil {
		return err
	}
	defer func() { _ = normalizer.Stop() }()
	client := kafkaio.NewClient(brokers, 5*time.Second)
	var firstAt time.Time
	cpu0, bcpu0, rcpu0 := 0.0, 0.0, 0.0
	for {
		if !normalizer.Running() {
			return fmt.Errorf("normalizer exited:\n%s", normalizer.Tail(20))
		}
		got, err := endOffsets(ctx, client, norm, partitions)
		if err != nil {
			return err
		}
		if got > 0 && firstAt.IsZero() {
			// Process start-up and the group join are not throughput.
			firstAt, cpu0 = time.Now(), stack.CPUSeconds(normalizer.PID())
			bcpu0, rcpu0 = stack.CPUSeconds(broker.PID()), stack.CPUSeconds(rds.PID())
			if profile != "" {
				go fetchProfile("http://127.0.0.1:"+strconv.Itoa(ops)+"/debug/pprof/profile?seconds=3", profile)
			}
		}
		if got >= int64(unique) {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("only %d of %d events after 10 minutes", got, unique)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(firstAt)
	cpu := stack.CPUSeconds(normalizer.PID()) - cpu0
	bcpu, rcpu := stack.CPUSeconds(broker.PID())-bcpu0, stack.CPUSeconds(rds.PID())-rcpu0
	rss := stack.PeakRSSKiB(normalizer.PID())
	time.Sleep(time.Second) // anything beyond the unique count would be a duplicate
	got, err := endOffsets(ctx, client, norm, partitions)
	if err != nil {
		return err
	}
	q, _ := endOffsets(ctx, client, quar, partitions)
	batches, records := stack.MetricSumCount("http://127.0.0.1:"+strconv.Itoa(ops)+"/metrics", "closedloop_consumer_batch_size")
	fmt.Printf("\n%d raw records (%d unique) in %.2fs after the first event: %.0f events/s, %.0f records/s\n",
		n, unique, elapsed.Seconds(), float64(unique)/elapsed.Seconds(), float64(n)/elapsed.Seconds())
	fmt.Printf("normalizer CPU %.1f µs per raw record, peak RSS %.1f MiB; start to first event %s\n",
		cpu/float64(n)*1e6, float64(rss)/1024, firstAt.Sub(start).Round(time.Millisecond))
	fmt.Printf("meanwhile the dev broker used %.1f µs and redis-server %.1f µs of CPU per raw record (%.0f%% and %.0f%% of a core)\n",
		bcpu/float64(n)*1e6, rcpu/float64(n)*1e6, bcpu/elapsed.Seconds()*100, rcpu/elapsed.Seconds()*100)
	if batches > 0 {
		fmt.Printf("handler calls: %d, %.1f records per batch on average\n", int(batches), records/batches)
	}
	fmt.Printf("normalized topic: %d events (%d unique expected), quarantine: %d\n", got, unique, q)
	if got != int64(unique) || q != 0 {
		return errors.New("the normalized topic does not hold each unique event exactly once")
	}
	return nil
}

func fetchProfile(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// endOffsets sums the end offsets of a topic's partitions (the record count
// of a topic that was empty at the start).
func endOffsets(ctx context.Context, c *kafka.Client, topic string, partitions int) (int64, error) {
	req := make([]kafka.OffsetRequest, partitions)
	for i := range req {
		req[i] = kafka.LastOffsetOf(i)
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: req}})
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		sum += p.LastOffset
	}
	return sum, nil
}
