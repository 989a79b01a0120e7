// Command sinkbench measures the sink-warehouse service as a process: it
// fills feedback.enriched.v1 on the dev broker with -n FeedbackEvents, starts
// sink-warehouse against a fresh PostgreSQL, and times it from its first row
// to the last; then it checks every event is exactly one row.
//
//	go run ./tools/sinkbench -n 100000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
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
	var env stack.EnvFlags
	flag.Var(&env, "env", "NAME=value added to the sink's environment (repeatable)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *n, *partitions, env); err != nil {
		fmt.Fprintln(os.Stderr, "sinkbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, n, partitions int, env []string) error {
	dir, bin, cleanup, err := stack.Workspace(ctx, "sinkbench")
	if err != nil {
		return err
	}
	defer cleanup()
	topics := kafkaio.NewTopics("")
	broker, err := stack.StartBroker(ctx, bin, dir, 0, partitions, topics.All())
	if err != nil {
		return err
	}
	defer broker.Stop()
	pg, err := localinfra.StartPostgres(ctx)
	if err != nil {
		return err
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
				return err
			}
			msgs = msgs[:0]
		}
	}

	p := &stack.Pipeline{BinDir: bin, Dir: filepath.Join(dir, "logs"), Brokers: broker.Addrs, DatabaseURL: pg.URL,
		Run: []string{"sink-warehouse"}, Env: append([]string{"LOG_LEVEL=warn"}, env...)}
	fmt.Println("starting sink-warehouse…")
	start := time.Now()
	if err := p.Start(ctx); err != nil {
		_ = p.Stop()
		return err
	}
	defer p.Stop()
	pool, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	var first time.Time
	for {
		var got int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM closedloop.feedback_events`).Scan(&got)
		if got > 0 && first.IsZero() {
			first = time.Now()
		}
		if got >= n {
			break
		}
		if time.Since(start) > 10*time.Minute || ctx.Err() != nil {
			return fmt.Errorf("%d of %d rows after %s", got, n, time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(first)
	var rows, distinct int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM closedloop.feedback_events`).Scan(&rows, &distinct); err != nil {
		return err
	}
	pid := p.Services["sink-warehouse"].PID()
	fmt.Printf("\n%d rows in %s after the first: %.0f rows/s; start to first row %s\n", n, took.Round(time.Millisecond),
		float64(n)/took.Seconds(), first.Sub(start).Round(time.Millisecond))
	fmt.Printf("sink-warehouse CPU %.1f µs per row, peak RSS %.1f MiB\n", stack.CPUSeconds(pid)*1e6/float64(n), float64(stack.PeakRSSKiB(pid))/1024)
	fmt.Printf("rows %d, distinct event ids %d (want %d and %d)\n", rows, distinct, n, n)
	if rows != n || distinct != n {
		return fmt.Errorf("rows do not match the events")
	}
	return nil
}
