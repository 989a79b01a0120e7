package kafkaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/telemetry"
	"github.com/closedloop/closedloop/libs/telemetry/telemetrytest"
)

var spans = tracetest.NewSpanRecorder()

func init() {
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	otel.SetTextMapPropagator(propagation.TraceContext{})
}

// broker is one kfake broker with topics of 3 partitions; its addresses.
func broker(t *testing.T, topics ...string) []string {
	t.Helper()
	return newCluster(t, 1, 3, topics...).ListenAddrs()
}

// newCluster is a kfake cluster of n brokers with topics of the given
// partitions, closed when the test ends.
func newCluster(t *testing.T, n, partitions int, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(n), kfake.SeedTopics(int32(partitions), topics...), kfake.Ports(make([]int, n)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type seen struct {
	mu   sync.Mutex
	vals []string
	ch   chan string
}

func newSeen() *seen { return &seen{ch: make(chan string, 1000)} }

func (s *seen) add(v string) {
	s.mu.Lock()
	s.vals = append(s.vals, v)
	s.mu.Unlock()
	s.ch <- v
}

func (s *seen) wait(t *testing.T, n int) []string {
	t.Helper()
	var got []string
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case v := <-s.ch:
			got = append(got, v)
		case <-timeout:
			t.Fatalf("saw %d of %d records: %v", len(got), n, got)
		}
	}
	return got
}

func runConsumer(t *testing.T, cfg ConsumerConfig, h Handler) (stop func()) {
	t.Helper()
	c, err := NewConsumer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer Run: %v", err)
		}
	}
}

func TestRecordsFlowWithTheirTraceAndAreNotSeenAgainAfterCommit(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	ctx, root := otel.Tracer("test").Start(context.Background(), "root")
	for i := range 10 {
		if err := p.Produce(ctx, Record{Topic: "in", Key: []byte(fmt.Sprint(i % 3)), Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	root.End()
	got := newSeen()
	cfg := ConsumerConfig{Brokers: addrs, GroupID: "g1", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q", Log: quiet()}
	var traceMismatch error
	var mu sync.Mutex
	stop := runConsumer(t, cfg, func(ctx context.Context, m kafka.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if id := spanTrace(ctx); id != root.SpanContext().TraceID().String() {
			traceMismatch = fmt.Errorf("handler trace %s, want %s", id, root.SpanContext().TraceID())
		}
		got.add(string(m.Value))
		return nil
	})
	got.wait(t, 10)
	stop()
	if traceMismatch != nil {
		t.Fatal(traceMismatch)
	}

	// A new member of the same group starts after the committed offsets.
	if err := p.Produce(context.Background(), Record{Topic: "in", Key: []byte("k"), Value: []byte("late")}); err != nil {
		t.Fatal(err)
	}
	again := newSeen()
	stop = runConsumer(t, cfg, func(_ context.Context, m kafka.Message) error { again.add(string(m.Value)); return nil })
	if v := again.wait(t, 1); v[0] != "late" {
		t.Fatalf("after restart the group saw %q first, want only the new record", v[0])
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	if len(again.vals) != 1 {
		t.Fatalf("after restart the group saw %v, want only [late]", again.vals)
	}
}

func TestAPermanentFailureIsQuarantinedWithItsReasonAndThePartitionMovesOn(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	for _, v := range []string{"ok1", "bad", "boom", "ok2"} {
		if err := p.Produce(context.Background(), Record{Topic: "in", Key: []byte("same-partition"), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	got := newSeen()
	stop := runConsumer(t, ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q", Log: quiet()},
		func(_ context.Context, m kafka.Message) error {
			switch string(m.Value) {
			case "bad":
				return Permanentf("malformed_json", "unexpected end of input")
			case "boom":
				panic("nil map")
			}
			got.add(string(m.Value))
			return nil
		})
	defer stop()
	if v := got.wait(t, 2); v[0] != "ok1" || v[1] != "ok2" {
		t.Fatalf("handled %v, want [ok1 ok2]", v)
	}
	reasons := map[string]string{}
	for len(reasons) < 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		m, err := readAny(ctx, addrs, "q")
		cancel()
		if err != nil {
			t.Fatalf("quarantine has %v: %v", reasons, err)
		}
		for _, mm := range m {
			reasons[string(mm.Value)] = Header(mm, HeaderQuarantineReason)
		}
	}
	if reasons["bad"] != "malformed_json" || reasons["boom"] != "handler_panic" {
		t.Fatalf("quarantine reasons = %v", reasons)
	}
}

func TestARetryableFailureIsRetriedUntilItSucceedsWithoutSkipping(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	for _, v := range []string{"a", "b"} {
		_ = p.Produce(context.Background(), Record{Topic: "in", Key: []byte("k"), Value: []byte(v)})
	}
	var fails int
	got := newSeen()
	stop := runConsumer(t, ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q", Log: quiet(), RetryBackoffMax: 50 * time.Millisecond},
		func(_ context.Context, m kafka.Message) error {
			if string(m.Value) == "a" && fails < 3 {
				fails++
				return errors.New("redis: connection refused")
			}
			got.add(string(m.Value))
			return nil
		})
	defer stop()
	if v := got.wait(t, 2); strings.Join(v, "") != "ab" {
		t.Fatalf("handled %v, want a (after 3 retries) then b", v)
	}
}

func TestAProduceToAMissingTopicFailsInsteadOfHanging(t *testing.T) {
	addrs := broker(t, "in")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Produce(ctx, Record{Topic: "nope", Value: []byte("x")}); err == nil {
		t.Fatal("produce to a missing topic succeeded")
	}
}

func TestEnsureTopicsNamesMissingTopicsOrCreatesThem(t *testing.T) {
	addrs := broker(t, "exists")
	ctx := context.Background()
	err := EnsureTopics(ctx, addrs, []string{"exists", "missing"}, false, TopicSpec{})
	if err == nil || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), "KAFKA_CREATE_TOPICS") {
		t.Fatalf("err = %v", err)
	}
	if err := EnsureTopics(ctx, addrs, []string{"exists", "missing"}, true, TopicSpec{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
}

func readAny(ctx context.Context, addrs []string, topic string) ([]kafka.Message, error) {
	var out []kafka.Message
	for p := range 3 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		for {
			rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			m, err := r.ReadMessage(rctx)
			cancel()
			if err != nil {
				break
			}
			out = append(out, m)
		}
		_ = r.Close()
	}
	if len(out) == 0 {
		return nil, ctx.Err()
	}
	return out, nil
}

func spanTrace(ctx context.Context) string {
	return trace.SpanContextFromContext(ctx).TraceID().String()
}

// pollUntil checks done under mu every 20 ms until it holds or 20 s have
// passed; the caller then checks what it expects.
func pollUntil(mu *sync.Mutex, done func() bool) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		ok := done()
		mu.Unlock()
		if ok {
			return
		}
	}
}

// runBatch runs a batch consumer until the returned stop is called.
func runBatch(c *Consumer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() { cancel(); <-done }
}

func TestABatchCommitsItsDonePrefixRetriesFromTheFailureAndIsolatesAPanic(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	var recs []Record
	for _, v := range []string{"r1", "r2", "flaky", "r4", "boom", "r6"} {
		recs = append(recs, Record{Topic: "in", Key: []byte("one-partition"), Value: []byte(v)})
	}
	if err := p.Produce(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	flaky := 0
	var order []string
	c, err := NewBatchConsumer(ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), RetryBackoffMax: 20 * time.Millisecond},
		func(_ context.Context, batch []Delivery) []error {
			mu.Lock()
			defer mu.Unlock()
			var errs []error
			for i, d := range batch {
				switch string(d.Msg.Value) {
				case "boom":
					panic("nil map")
				case "flaky":
					if flaky < 2 {
						flaky++
						if errs == nil {
							errs = make([]error, len(batch))
						}
						errs[i] = errors.New("redis: connection refused")
						return errs // the rest is not attempted: retried with it
					}
				}
				order = append(order, string(d.Msg.Value))
			}
			return errs
		})
	if err != nil {
		t.Fatal(err)
	}
	defer runBatch(c)()

	q, err := readAny(context.Background(), addrs, "q")
	if err != nil || len(q) != 1 || string(q[0].Value) != "boom" || Header(q[0], HeaderQuarantineReason) != "handler_panic" {
		t.Fatalf("quarantine %v, %v: want only boom", q, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		finished := len(order) > 0 && order[len(order)-1] == "r6"
		mu.Unlock()
		if finished || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	// Every record after the last successful one is handled again in its
	// batch; r6 follows the panic split. What matters: order kept, every
	// record handled, r1 and r2 (done before the failure) never again.
	got := strings.Join(order, " ")
	if strings.Count(got, "r1") != 1 || strings.Count(got, "r2") != 1 || !strings.Contains(got, "flaky") || !strings.HasSuffix(got, "r6") {
		t.Fatalf("handled %q", got)
	}
}

// A late fetch answer (a network timeout, whatever its words) is told apart
// by its type; other reader errors are not.
func TestAFetchTimeoutIsToldApartByItsType(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	if !fetchTimedOut([]any{0, "topic", int64(5), timeout}) {
		t.Fatal("a read deadline error is not a fetch timeout")
	}
	if fetchTimedOut([]any{0, "topic", errors.New("i/o timeout")}) || fetchTimedOut([]any{"i/o timeout"}) {
		t.Fatal("a message that reads like a timeout counted as one")
	}
}

// With Workers, one worker takes the waiting records of all its partitions
// in one batch, each partition's in offset order, under a stable worker
// name; a retryable failure holds back only its own partition: the other
// partitions' records of the batch are committed and never handled again.
func TestAWorkerBatchesItsPartitionsTogetherAndAFailureHoldsOnlyItsPartition(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	partOf := func(key string) int { return kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(key)}, 0, 1, 2) }
	var recs []Record
	for i := range 60 {
		key := fmt.Sprint("k", i)
		recs = append(recs, Record{Topic: "in", Key: []byte(key), Value: []byte(fmt.Sprintf("%d:%03d", partOf(key), i))})
	}
	hold := string(recs[10].Value) // fails twice, then succeeds
	if err := p.Produce(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fails := 0
	handled := map[string]int{}
	var order []string
	mixed, workers := false, map[string]bool{}
	c, err := NewBatchConsumer(ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), RetryBackoffMax: 20 * time.Millisecond, Workers: 1},
		func(ctx context.Context, batch []Delivery) []error {
			time.Sleep(20 * time.Millisecond) // let the queue fill
			mu.Lock()
			defer mu.Unlock()
			workers[WorkerOf(ctx)] = true
			parts := map[int]bool{}
			var errs []error
			for i, d := range batch {
				parts[d.Msg.Partition] = true
				v := string(d.Msg.Value)
				if v == hold && fails < 2 {
					fails++
					errs = make([]error, len(batch))
					errs[i] = errors.New("redis: connection refused")
					continue
				}
				handled[v]++
				order = append(order, v)
			}
			mixed = mixed || len(parts) > 1
			return errs
		})
	if err != nil {
		t.Fatal(err)
	}
	defer runBatch(c)()
	pollUntil(&mu, func() bool { return len(handled) == len(recs) })
	time.Sleep(300 * time.Millisecond) // a wrong extra handling would show
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != len(recs) || fails != 2 {
		t.Fatalf("handled %d of %d distinct records, %d failures", len(handled), len(recs), fails)
	}
	if !mixed {
		t.Fatal("no batch held records of more than one partition")
	}
	if len(workers) != 1 || !workers["in/worker-0"] {
		t.Fatalf("worker names %v, want only in/worker-0", workers)
	}
	holdPart := hold[:1]
	last := map[string]string{}
	for _, v := range order {
		part := v[:1]
		if v < last[part] && part != holdPart {
			t.Fatalf("partition %s out of order: %s after %s (%v)", part, v, last[part], order)
		}
		if v > last[part] {
			last[part] = v
		}
		if part != holdPart && handled[v] != 1 {
			t.Fatalf("%s (another partition than the failure's) handled %d times", v, handled[v])
		}
	}
}

// Records that come too far apart to make a batch of two within the
// linger are never held for it: a fetch lingers only at a rate that pays.
func TestAFetchDoesNotLingerForRecordsTooFarApartToBatch(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	handled := make(chan time.Time, 10)
	c, err := NewBatchConsumer(ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), Workers: 1, Linger: 2 * time.Second},
		func(_ context.Context, batch []Delivery) []error {
			for range batch {
				handled <- time.Now()
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer runBatch(c)()
	ctx := context.Background()
	for i := range 4 {
		// 1.2 s apart: one record per 2 s linger at most.
		sent := time.Now()
		if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte(fmt.Sprint("r", i))}); err != nil {
			t.Fatal(err)
		}
		select {
		case at := <-handled:
			// The first waits for the group to form.
			if d := at.Sub(sent); i > 0 && d > 600*time.Millisecond {
				t.Fatalf("record %d handled %v after it was produced: held for the linger", i, d)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("record %d not handled", i)
		}
		time.Sleep(time.Until(sent.Add(1200 * time.Millisecond)))
	}
}

// With Linger, a fetcher whose records keep coming asks the broker to hold
// its next fetch for the ones still on their way, which reach the worker in
// one batch; a lone record after a quiet spell is not held back.
func TestAFetchLingersOnlyWhileRecordsKeepComing(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	var mu sync.Mutex
	var batches [][]string
	handled := make(chan string, 100)
	c, err := NewBatchConsumer(ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), Workers: 1, Linger: time.Second},
		func(_ context.Context, batch []Delivery) []error {
			var vs []string
			for _, d := range batch {
				vs = append(vs, string(d.Msg.Value))
			}
			mu.Lock()
			batches = append(batches, vs)
			mu.Unlock()
			for _, v := range vs {
				handled <- v
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer runBatch(c)()
	ctx := context.Background()
	wait := func(n int, within time.Duration) {
		t.Helper()
		receive(t, handled, n, within, func() string {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Sprintf("; batches so far %v", batches)
		})
	}
	// Once the group is joined, a lone record after a quiet spell longer
	// than the linger is handled without waiting for it.
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	wait(1, 30*time.Second)
	time.Sleep(1200 * time.Millisecond)
	sent := time.Now()
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte("lone")}); err != nil {
		t.Fatal(err)
	}
	wait(1, 5*time.Second)
	if d := time.Since(sent); d >= time.Second {
		t.Fatalf("a lone record after a quiet spell took %v: it was held for the linger", d)
	}
	// Two records together, then more in quick succession: the next fetch
	// lingers and brings the late ones in one answer.
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte("r0")}, Record{Topic: "in", Key: []byte("k"), Value: []byte("r1")}); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 12; i++ {
		time.Sleep(20 * time.Millisecond)
		if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte(fmt.Sprint("r", i))}); err != nil {
			t.Fatal(err)
		}
	}
	wait(12, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	biggest := 0
	for _, b := range batches {
		biggest = max(biggest, len(b))
	}
	if biggest < 6 {
		t.Fatalf("batches %v: the fetch did not linger for the records that kept coming", batches)
	}
}

// The consumer never holds more fetched bytes than BufferBytes across its
// workers (a record larger than the whole budget still passes, alone), and
// every record is handled once the handlers finish.
func TestTheConsumerHoldsNoMoreThanItsByteBudget(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	var recs []Record
	for i := range 40 {
		recs = append(recs, Record{Topic: "in", Key: []byte(fmt.Sprint("k", i)), Value: bytes.Repeat([]byte{'a' + byte(i%26)}, 3000)})
	}
	recs = append(recs, Record{Topic: "in", Key: []byte("big"), Value: bytes.Repeat([]byte{'Z'}, 30000)})
	if err := p.Produce(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	const limit = 10000 // three small records at most
	var c *Consumer
	var mu sync.Mutex
	handled, maxHeld, bigAlone, big := 0, int64(0), false, int64(0)
	c, err := NewBatchConsumer(ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), BufferBytes: limit},
		func(_ context.Context, batch []Delivery) []error {
			time.Sleep(10 * time.Millisecond) // let the fetcher fill what the budget allows
			held := c.Buffered()
			mu.Lock()
			defer mu.Unlock()
			for _, d := range batch {
				if len(d.Msg.Value) == 30000 {
					big = recordBytes(d.Msg)
					bigAlone = held == big
				} else {
					maxHeld = max(maxHeld, held)
				}
			}
			handled += len(batch)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer runBatch(c)()
	pollUntil(&mu, func() bool { return handled >= len(recs) })
	// The consumer gives a batch's bytes back once its handler has returned,
	// a moment after the last handler counted its records.
	var none sync.Mutex
	pollUntil(&none, func() bool { return c.Buffered() == 0 })
	mu.Lock()
	defer mu.Unlock()
	if handled != len(recs) {
		t.Fatalf("handled %d of %d records", handled, len(recs))
	}
	if !bigAlone {
		t.Fatal("the record larger than the budget was not held alone")
	}
	if maxHeld > limit {
		t.Fatalf("held %d bytes at once; the budget is %d (the big record alone: %d)", maxHeld, limit, big)
	}
	if maxHeld < 2*3000 {
		t.Fatalf("never held more than %d bytes: the budget was not used", maxHeld)
	}
	if c.Buffered() != 0 {
		t.Fatalf("%d bytes still counted after every record was handled", c.Buffered())
	}
}

// With no trace exporter (telemetry.SpansDropped) no producer or consumer
// span is started: a record's headers carry its producer's trace context as
// it was, and its handler gets that same context — trace and span id.
func TestWithSpansDroppedARecordCarriesItsProducersTraceContextToItsHandler(t *testing.T) {
	addrs := broker(t, "in", "q")
	telemetrytest.DroppingSpans(t)
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	ctx := telemetry.NewTrace(context.Background())
	want := trace.SpanContextFromContext(ctx)
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	got := make(chan [2]string, 1)
	cfg := ConsumerConfig{Brokers: addrs, GroupID: "g-dropped", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q", Log: quiet()}
	stop := runConsumer(t, cfg, func(ctx context.Context, m kafka.Message) error {
		select {
		case got <- [2]string{Header(m, "traceparent"), trace.SpanContextFromContext(ctx).SpanID().String()}:
		default:
		}
		return nil
	})
	defer stop()
	select {
	case g := <-got:
		if wantHeader := "00-" + want.TraceID().String() + "-" + want.SpanID().String() + "-00"; g[0] != wantHeader {
			t.Errorf("record traceparent %q, want the producer's own %q (no send span)", g[0], wantHeader)
		}
		if g[1] != want.SpanID().String() {
			t.Errorf("handler span id %s, want the producer's %s (no process span)", g[1], want.SpanID())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("record not handled")
	}
}

// lingerConsumer runs a one-worker batch consumer of "in" with the linger
// settings of linger (Linger, LingerRecords, LingerSpan). It calls h with
// each batch (when not nil), then passes every record's value to values.
func lingerConsumer(t *testing.T, addrs []string, p *Producer, linger ConsumerConfig, values chan<- string, h func([]Delivery)) (stop func()) {
	t.Helper()
	c, err := NewBatchConsumer(ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), Workers: 1, Linger: linger.Linger, LingerRecords: linger.LingerRecords, LingerSpan: linger.LingerSpan},
		func(_ context.Context, batch []Delivery) []error {
			if h != nil {
				h(batch)
			}
			for _, d := range batch {
				values <- string(d.Msg.Value)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return runBatch(c)
}

// A lingering fetch returns as soon as LingerRecords records (in bytes, at
// the average record size) have arrived: Linger bounds the wait only at
// rates that do not fill the batch sooner.
func TestALingeringFetchReturnsOnceItsBatchHasArrived(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	handled := make(chan string, 100)
	defer lingerConsumer(t, addrs, p, ConsumerConfig{Linger: 5 * time.Second, LingerRecords: 4}, handled, nil)()
	ctx := context.Background()
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	receive(t, handled, 1, 30*time.Second, nil)
	// Two records at once: the next fetch lingers (two within the linger).
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte("r0")}, Record{Topic: "in", Key: []byte("k"), Value: []byte("r1")}); err != nil {
		t.Fatal(err)
	}
	receive(t, handled, 2, 5*time.Second, nil)
	sent := time.Now()
	for i := 2; i < 10; i++ {
		if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte(fmt.Sprint("r", i))}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Without the batch target every fetch would be held its 5 s linger.
	receive(t, handled, 8, 2500*time.Millisecond, nil)
	if d := time.Since(sent); d > 2500*time.Millisecond {
		t.Fatalf("8 records handled %v after the first was sent", d)
	}
}

// With LingerSpan, a lingering fetch waits for what arrives in the span at
// the recent rate when that is more than LingerRecords: a steady stream's
// batches grow with its rate instead of staying at LingerRecords.
func TestALingeringFetchBatchGrowsWithTheRate(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	var mu sync.Mutex
	var sizes []int
	handled := make(chan string, 1000)
	defer lingerConsumer(t, addrs, p, ConsumerConfig{Linger: 2 * time.Second, LingerRecords: 2, LingerSpan: 250 * time.Millisecond}, handled,
		func(batch []Delivery) {
			mu.Lock()
			sizes = append(sizes, len(batch))
			mu.Unlock()
		})()
	ctx := context.Background()
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	receive(t, handled, 1, 30*time.Second, nil)
	mu.Lock()
	sizes = nil
	mu.Unlock()
	// About 100 records a second for 3 s: 25 in a span, 2 in LingerRecords.
	const n = 300
	go func() {
		start := time.Now()
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * 10 * time.Millisecond)))
			if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte(fmt.Sprint("r", i))}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// The waits stay about the span: 12 fetches held their whole 2 s
	// linger would pass the 20 s allowed.
	receive(t, handled, n, 20*time.Second, nil)
	mu.Lock()
	defer mu.Unlock()
	// The first batches start from LingerRecords while the rate is learnt,
	// and the last is what was left: the middle ones show the span.
	got := slices.Clone(sizes)
	slices.Sort(got)
	if med := got[len(got)/2]; med < 10 {
		t.Fatalf("median batch %d records at ~100/s with a 250 ms span (want ~25; LingerRecords alone gives ~2): %v", med, sizes)
	}
}

// After a backlog the rate a fetcher measured is the rate it read at; once
// it has caught up, one fetch that waits out the whole linger for that
// many bytes resets the estimate, so a slow stream's records are not held
// the linger each.
func TestAfterABacklogTheSpanFollowsTheLiveRate(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	ctx := context.Background()
	// 8 MiB of records: several answers (at most 1 MiB of a partition
	// each), handed over as fast as they come, so the estimate reads the
	// rate they are read at.
	const backlog = 4000
	body := bytes.Repeat([]byte("x"), 2<<10)
	for i := 0; i < backlog; i += 100 {
		recs := make([]Record, 100)
		for j := range recs {
			recs[j] = Record{Topic: "in", Key: []byte("k"), Value: body}
		}
		if err := p.Produce(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	handled := make(chan time.Time, backlog+100)
	values := make(chan string, backlog+100)
	defer lingerConsumer(t, addrs, p, ConsumerConfig{Linger: time.Second, LingerRecords: 2, LingerSpan: 100 * time.Millisecond}, values,
		func(batch []Delivery) {
			for range batch {
				handled <- time.Now()
			}
		})()
	receive(t, values, backlog, 30*time.Second, nil)
	for range backlog {
		<-handled
	}
	// Then ~40 records a second for 4 s, of the same size: 4 in a span.
	const n = 160
	var mu sync.Mutex
	sent := make([]time.Time, n)
	go func() {
		start := time.Now()
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * 25 * time.Millisecond)))
			mu.Lock()
			sent[i] = time.Now()
			mu.Unlock()
			if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: body}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var held []time.Duration
	for i := range n {
		select {
		case at := <-handled:
			<-values
			mu.Lock()
			held = append(held, at.Sub(sent[i]))
			mu.Unlock()
		case <-time.After(20 * time.Second):
			t.Fatalf("record %d of the live stream not handled", i)
		}
	}
	// The first second may wait out one linger at the backlog's rate; after
	// it a record waits about the span for its batch, not the linger.
	late := 0
	for _, d := range held[n/2:] {
		if d > 500*time.Millisecond {
			late++
		}
	}
	// A linger waited out at the backlog's rate holds every record of
	// that second (~40); a loaded machine may delay one or two.
	if late >= 10 {
		t.Fatalf("%d of the last %d records held over 500 ms (linger 1 s, span 100 ms): %v", late, n/2, held[n/2:])
	}
}

// Fed in bursts — the batches of a stage before it — at a rate too low to
// fill LingerRecords within the linger, a lingering fetch is answered when
// a burst lands, not when its linger ends: without that, each burst waited
// from zero to a whole linger depending on how its arrival lined up with
// the fetch's linger.
func TestALingeringFetchIsAnsweredWhenABurstLands(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	const linger, every, bursts, size = time.Second, 800 * time.Millisecond, 12, 10
	var mu sync.Mutex
	handledAt := map[string]time.Time{} // by burst, when its first record was handled
	var batches []int
	values := make(chan string, bursts*size+10)
	defer lingerConsumer(t, addrs, p, ConsumerConfig{Linger: linger, LingerRecords: 100, LingerSpan: 10 * time.Millisecond}, values,
		func(batch []Delivery) {
			mu.Lock()
			defer mu.Unlock()
			batches = append(batches, len(batch))
			for _, d := range batch {
				b, _, _ := strings.Cut(string(d.Msg.Value), "/")
				if _, ok := handledAt[b]; !ok {
					handledAt[b] = time.Now()
				}
			}
		})()
	ctx := context.Background()
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte("k"), Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	receive(t, values, 1, 30*time.Second, nil)
	sentAt := make([]time.Time, bursts)
	start := time.Now()
	for b := range bursts {
		time.Sleep(time.Until(start.Add(time.Duration(b) * every)))
		recs := make([]Record, size)
		for i := range recs {
			recs[i] = Record{Topic: "in", Key: []byte("k"), Value: []byte(fmt.Sprintf("b%d/%d", b, i))}
		}
		sentAt[b] = time.Now()
		if err := p.Produce(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	receive(t, values, bursts*size, 10*time.Second, nil)
	mu.Lock()
	defer mu.Unlock()
	// The first bursts show the input's shape; the rest are answered as
	// they land.
	var held []time.Duration
	for b := 3; b < bursts; b++ {
		held = append(held, handledAt[fmt.Sprint("b", b)].Sub(sentAt[b]))
	}
	sorted := slices.Clone(held)
	slices.Sort(sorted)
	if med := sorted[len(sorted)/2]; med > 150*time.Millisecond {
		t.Fatalf("bursts every %s held %v from their produce to their handler (median %v; linger %s)", every, held, med, linger)
	}
	// The same batches: each burst whole, not split.
	got := slices.Clone(batches)
	slices.Sort(got)
	if med := got[len(got)/2]; med < size {
		t.Fatalf("median batch %d records, bursts of %d: %v", med, size, batches)
	}
}

func TestBurstsTellABurstFromAStream(t *testing.T) {
	var b bursts
	b.observe(10, 15000, 0, 80*time.Millisecond) // ten records produced together
	if got, ok := b.minBytes(24000, 150_000, 100*time.Millisecond); got != 7500 || !ok {
		t.Fatalf("after a burst of 15,000 bytes at 150,000 B/s: minBytes %d, %v, want 7,500 (half the burst)", got, ok)
	}
	if got, ok := b.minBytes(24000, 300_000, 100*time.Millisecond); got != 24000 || ok {
		t.Fatalf("at a rate that brings the target within the linger: minBytes %d, %v, want the target", got, ok)
	}
	if got, ok := b.minBytes(24000, 0, 100*time.Millisecond); got != 24000 || ok {
		t.Fatalf("without a rate: minBytes %d, %v, want the target", got, ok)
	}
	b.observe(10, 15000, 70*time.Millisecond, time.Millisecond) // already there when asked: says nothing
	b.observe(1, 1500, 0, 80*time.Millisecond)                  // one record: says nothing
	if b.bytes == 0 {
		t.Fatal("an answer that says nothing ended the bursts")
	}
	b.observe(10, 15000, 70*time.Millisecond, 80*time.Millisecond) // spread over the wait: a stream
	if got, ok := b.minBytes(24000, 150_000, 100*time.Millisecond); got != 24000 || ok {
		t.Fatalf("after a stream's answer: minBytes %d, %v, want the target", got, ok)
	}
}

func TestLingerMinBytes(t *testing.T) {
	for _, c := range []struct {
		name    string
		records int
		avg     float64
		span    time.Duration
		rate    float64
		budget  int
		want    int32
	}{
		{"records only", 16, 1000, 0, 0, 1 << 20, 16000},
		{"the span is less", 16, 1000, 16 * time.Millisecond, 500_000, 1 << 20, 16000},   // 8,000 bytes in 16 ms
		{"the span is more", 16, 1000, 16 * time.Millisecond, 4_000_000, 1 << 20, 64000}, // 64,000 bytes in 16 ms
		{"capped at lingerBytes", 16, 1000, time.Second, 4_000_000, 1 << 20, lingerBytes},
		{"capped at the budget", 16, 1000, 16 * time.Millisecond, 4_000_000, 20000, 20000},
		{"at least one byte", 16, 0, 16 * time.Millisecond, 0, 1 << 20, 1},
		{"an unbounded rate", 16, 1000, 16 * time.Millisecond, 1e300, 1 << 20, lingerBytes},
	} {
		if got := lingerMinBytes(c.records, c.avg, c.span, c.rate, c.budget); got != c.want {
			t.Errorf("%s: lingerMinBytes = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestArrivalsIsTheRatioOfAverages(t *testing.T) {
	var a arrivals
	if a.rate() != 0 {
		t.Fatalf("rate before any answer = %v", a.rate())
	}
	a.add(1000, 0) // no time: ignored
	if a.rate() != 0 {
		t.Fatalf("an answer without elapsed time counted: rate %v", a.rate())
	}
	a.add(1000, 10*time.Millisecond)
	if r := a.rate(); math.Abs(r-100_000) > 1 {
		t.Fatalf("rate after 1,000 bytes in 10 ms = %v, want 100,000/s", r)
	}
	// Answers of 1,000 bytes alternately 1 ms and 19 ms apart: 2,000 bytes
	// in 20 ms, 100,000 bytes/s, where the average of the answers' own
	// rates (1,000,000 and 52,632 bytes/s) would read 526,316.
	for range 64 {
		a.add(1000, time.Millisecond)
		a.add(1000, 19*time.Millisecond)
	}
	if r := a.rate(); r < 90_000 || r > 110_000 {
		t.Fatalf("rate %v, want ~100,000 bytes/s", r)
	}
}

// receive takes n values from ch within the given time, or fails the test,
// adding what more tells (when not nil).
func receive(t *testing.T, ch <-chan string, n int, within time.Duration, more func() string) {
	t.Helper()
	deadline := time.After(within)
	for i := range n {
		select {
		case <-ch:
		case <-deadline:
			msg := ""
			if more != nil {
				msg = more()
			}
			t.Fatalf("%d of %d records not handled within %s%s", n-i, n, within, msg)
		}
	}
}
