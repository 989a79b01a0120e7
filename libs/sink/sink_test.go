package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/closedloop/closedloop/libs/expr"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/status"
	"github.com/closedloop/closedloop/libs/telemetry"
	"github.com/closedloop/closedloop/libs/telemetry/telemetrytest"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// dest is a destination that fails on command.
type dest struct {
	mu        sync.Mutex
	got       []string // delivered event ids, in order
	calls     int
	failWith  func(ev *feedbackv1.FeedbackEvent, attempt int) error
	callTimes []time.Time
}

func (d *dest) Deliver(_ context.Context, events []*Event) []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	d.callTimes = append(d.callTimes, time.Now())
	var errs []error
	for i, e := range events {
		if d.failWith != nil {
			if err := d.failWith(e.Feedback, e.Attempt); err != nil {
				if errs == nil {
					errs = make([]error, len(events))
				}
				errs[i] = err
				continue
			}
		}
		d.got = append(d.got, e.Feedback.EventId)
	}
	return errs
}

func (d *dest) delivered() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.got...)
}

type dlq struct {
	mu   sync.Mutex
	recs []kafkaio.Record
	fail error
	// limit, when set, refuses records larger than it as the producer does.
	limit int
}

func (q *dlq) Produce(_ context.Context, recs ...kafkaio.Record) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return q.fail
	}
	for _, r := range recs {
		if n := kafkaio.EncodedSize(r.Key, r.Value, r.Headers); q.limit > 0 && n > q.limit {
			return kafkaio.Permanent(kafkaio.ReasonRecordTooLarge, &kafkaio.RecordTooLargeError{Topic: r.Topic, Size: n, Limit: q.limit})
		}
	}
	q.recs = append(q.recs, recs...)
	return nil
}

func (q *dlq) letters(t *testing.T) []*sinkv1.DeadLetter {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*sinkv1.DeadLetter
	for _, r := range q.recs {
		var dl sinkv1.DeadLetter
		if err := proto.Unmarshal(r.Value, &dl); err != nil {
			t.Fatal(err)
		}
		out = append(out, &dl)
	}
	return out
}

func batchOf(t *testing.T, ids ...string) []kafkaio.Delivery {
	t.Helper()
	out := make([]kafkaio.Delivery, len(ids))
	for i, id := range ids {
		v, err := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: id, Source: "dl", Provider: "delighted",
			Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r-" + id}})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Topic: "in", Partition: 0, Offset: int64(i), Value: v}}
	}
	return out
}

func runner(t *testing.T, d Destination, q *dlq, mod func(*Config)) *Runner {
	t.Helper()
	cfg := Config{Sink: "sink-test", DLQTopic: "dlq", DLQ: q, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxAttempts: 4, Breaker: retry.NewBreaker(100, time.Second, nil)}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRetryableFailuresAreRetriedAndDeliveredOnceInOrder(t *testing.T) {
	d := &dest{failWith: func(ev *feedbackv1.FeedbackEvent, attempt int) error {
		if ev.EventId == "b" && attempt < 3 {
			return HTTPStatus(503, http.Header{}, []byte("busy"))
		}
		return nil
	}}
	q := &dlq{}
	if errs := runner(t, d, q, nil).HandleBatch(context.Background(), batchOf(t, "a", "b", "c")); errs != nil {
		t.Fatal(errs)
	}
	if got := d.delivered(); len(got) != 3 || got[0] != "a" || got[1] != "c" || got[2] != "b" {
		t.Fatalf("delivered %v, want a and c, then b on its third attempt", got)
	}
	if len(q.recs) != 0 {
		t.Fatalf("%d dead letters for a retryable failure that recovered", len(q.recs))
	}
}

func TestAPermanentFailureIsDeadLetteredWithItsHistoryAndTheRestDelivered(t *testing.T) {
	d := &dest{failWith: func(ev *feedbackv1.FeedbackEvent, _ int) error {
		if ev.EventId == "bad" {
			return HTTPStatus(422, http.Header{}, []byte(`{"error":"email invalid"}`))
		}
		return nil
	}}
	q := &dlq{}
	if errs := runner(t, d, q, nil).HandleBatch(context.Background(), batchOf(t, "a", "bad", "c")); errs != nil {
		t.Fatal(errs)
	}
	dl := q.letters(t)
	if len(dl) != 1 || dl[0].EventId != "bad" || dl[0].ErrorClass != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT ||
		len(dl[0].Attempts) != 1 || dl[0].Attempts[0].StatusCode != 422 || dl[0].Sink != "sink-test" || dl[0].SourceOffset != 1 {
		t.Fatalf("dead letters %v", dl)
	}
	var ev feedbackv1.FeedbackEvent
	if err := proto.Unmarshal(dl[0].Event, &ev); err != nil || ev.EventId != "bad" {
		t.Fatalf("the dead letter does not carry the event: %v %v", &ev, err)
	}
	if got := d.delivered(); len(got) != 2 {
		t.Fatalf("delivered %v", got)
	}
}

func TestAnEventThatKeepsFailingIsExhaustedAfterMaxAttempts(t *testing.T) {
	d := &dest{failWith: func(ev *feedbackv1.FeedbackEvent, _ int) error {
		if ev.EventId == "b" {
			return errors.New("connection reset by peer")
		}
		return nil
	}}
	q := &dlq{}
	if errs := runner(t, d, q, nil).HandleBatch(context.Background(), batchOf(t, "a", "b")); errs != nil {
		t.Fatal(errs)
	}
	dl := q.letters(t)
	if len(dl) != 1 || dl[0].ErrorClass != sinkv1.ErrorClass_ERROR_CLASS_EXHAUSTED || len(dl[0].Attempts) != 4 {
		t.Fatalf("dead letters %v, want b exhausted after 4 attempts", dl)
	}
}

func TestRetryAfterIsAFloorOnTheWait(t *testing.T) {
	d := &dest{failWith: func(_ *feedbackv1.FeedbackEvent, attempt int) error {
		if attempt == 1 {
			return HTTPStatus(429, http.Header{"Retry-After": {"1"}}, nil)
		}
		return nil
	}}
	if errs := runner(t, d, &dlq{}, nil).HandleBatch(context.Background(), batchOf(t, "a")); errs != nil {
		t.Fatal(errs)
	}
	if gap := d.callTimes[1].Sub(d.callTimes[0]); gap < time.Second {
		t.Fatalf("retried after %s, before the destination's Retry-After of 1s", gap)
	}
}

func TestAnOutageOpensTheBreakerPausesWithoutDeadLettersAndResumesByItself(t *testing.T) {
	var mu sync.Mutex
	down := true
	d := &dest{failWith: func(*feedbackv1.FeedbackEvent, int) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return HTTPStatus(502, http.Header{}, nil)
		}
		return nil
	}}
	q := &dlq{}
	states := make(chan retry.BreakerState, 16)
	r := runner(t, d, q, func(c *Config) {
		c.Breaker = retry.NewBreaker(3, 150*time.Millisecond, func(s retry.BreakerState) { states <- s })
		c.MaxAttempts = 3 // would exhaust at once if the outage counted
	})
	done := make(chan []error, 1)
	go func() { done <- r.HandleBatch(context.Background(), batchOf(t, "a", "b")) }()
	if s := <-states; s != retry.Open {
		t.Fatalf("state %v, want open", s)
	}
	// While open, the destination is only probed every 150ms.
	time.Sleep(600 * time.Millisecond)
	d.mu.Lock()
	callsWhileDown := d.calls
	d.mu.Unlock()
	if callsWhileDown > 3+5 {
		t.Fatalf("%d delivery calls in 600ms of outage: the breaker did not pause delivery", callsWhileDown)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	select {
	case errs := <-done:
		if errs != nil {
			t.Fatal(errs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("did not resume after the destination came back")
	}
	if len(q.recs) != 0 {
		t.Fatalf("%d dead letters during an outage", len(q.recs))
	}
	if got := d.delivered(); len(got) != 2 || r.Breaker().State() != retry.Closed || r.Breaker().Opened() != 1 {
		t.Fatalf("delivered %v, breaker %v opened %d times", got, r.Breaker().State(), r.Breaker().Opened())
	}
}

func TestPauseByTheAdminAPIHoldsDeliveryUntilResumeAndStatusShowsIt(t *testing.T) {
	d := &dest{}
	r := runner(t, d, &dlq{}, nil)
	reg := status.NewRegistry("sink-test", "dev", "i1")
	reg.AddDestination(r)
	admin := &status.AdminServer{Registry: reg}
	ctx := context.Background()
	if _, err := admin.PauseDestination(ctx, &adminv1.PauseDestinationRequest{Destination: "nosuch"}); grpcstatus.Code(err) != codes.NotFound ||
		!strings.Contains(err.Error(), "it has: test") {
		t.Fatalf("pause of an unknown destination: %v", err)
	}
	p, err := admin.PauseDestination(ctx, &adminv1.PauseDestinationRequest{Destination: "test", Reason: "ann: CRM migration"})
	if err != nil || !p.Destination.Paused || p.Destination.PauseReason != "ann: CRM migration" {
		t.Fatalf("pause: %v %v", p, err)
	}
	done := make(chan []error, 1)
	go func() { done <- r.HandleBatch(ctx, batchOf(t, "a")) }()
	time.Sleep(200 * time.Millisecond)
	if len(d.delivered()) != 0 {
		t.Fatal("delivered while paused")
	}
	if _, err := admin.ResumeDestination(ctx, &adminv1.ResumeDestinationRequest{Destination: "test"}); err != nil {
		t.Fatal(err)
	}
	if errs := <-done; errs != nil || len(d.delivered()) != 1 {
		t.Fatalf("after resume: %v, delivered %v", errs, d.delivered())
	}
	st, err := admin.GetStatus(ctx, &adminv1.GetStatusRequest{})
	if err != nil || len(st.Destinations) != 1 {
		t.Fatalf("status: %v %v", st, err)
	}
	ds := st.Destinations[0]
	if ds.Name != "test" || ds.Sink != "sink-test" || ds.Paused || ds.PauseReason != "" || ds.Delivered != 1 ||
		ds.Breaker != adminv1.BreakerState_BREAKER_STATE_CLOSED || ds.DlqTopic != "dlq" {
		t.Fatalf("destination status %v", ds)
	}
}

func TestAStopWhileWaitingLeavesTheEventsUncommitted(t *testing.T) {
	d := &dest{}
	r := runner(t, d, &dlq{}, nil)
	r.Breaker().Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	errs := r.HandleBatch(ctx, batchOf(t, "a", "b"))
	if errs == nil || errs[0] == nil || errs[1] == nil {
		t.Fatalf("results %v: undelivered events must not be committed", errs)
	}
	if _, perm := kafkaio.IsPermanent(errs[0]); perm {
		t.Fatal("a stop was treated as a bad record")
	}
}

func TestADeadLetterThatCannotBeWrittenIsNotCommitted(t *testing.T) {
	d := &dest{failWith: func(*feedbackv1.FeedbackEvent, int) error { return Permanent(errors.New("rejected")) }}
	errs := runner(t, d, &dlq{fail: errors.New("broker down")}, nil).HandleBatch(context.Background(), batchOf(t, "a"))
	if errs == nil || errs[0] == nil {
		t.Fatal("committed an event whose dead letter was not written: it would be lost")
	}
}

// A dead letter too large for its topic (an event near the size limit plus
// its attempts) is written without the event, which stays at its source
// offset: the partition never stops on it.
func TestADeadLetterTooLargeForItsTopicIsWrittenWithoutTheEvent(t *testing.T) {
	d := &dest{failWith: func(ev *feedbackv1.FeedbackEvent, _ int) error {
		if ev.EventId == "big" {
			return Permanent(errors.New("rejected"))
		}
		return nil
	}}
	batch := batchOf(t, "a", "big", "c")
	v, _ := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: "big", Source: "dl", Comment: proto.String(strings.Repeat("x", 9000)),
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r-big"}})
	batch[1].Msg.Value = v
	q := &dlq{limit: 8000}
	if errs := runner(t, d, q, nil).HandleBatch(context.Background(), batch); errs != nil {
		t.Fatalf("the batch was not done: %v", errs)
	}
	dl := q.letters(t)
	if len(dl) != 1 || dl[0].EventId != "big" || len(dl[0].Event) != 0 || dl[0].EventOmittedBytes != int64(len(v)) ||
		dl[0].SourceTopic != "in" || dl[0].SourceOffset != 1 {
		t.Fatalf("dead letters %v", dl)
	}
	if got := d.delivered(); len(got) != 2 {
		t.Fatalf("delivered %v", got)
	}
}

func TestTheCheckpointSkipsARedeliveryButNotAReplay(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	d := &dest{}
	cp := RedisCheckpoint{RDB: rdb, Prefix: t.Name() + ":", TTL: time.Hour}
	r := runner(t, d, &dlq{}, func(c *Config) { c.Checkpoint = cp })
	ctx := context.Background()
	if errs := r.HandleBatch(ctx, batchOf(t, "a", "b")); errs != nil {
		t.Fatal(errs)
	}
	if errs := r.HandleBatch(ctx, batchOf(t, "a", "b", "c")); errs != nil { // redelivery after a crash
		t.Fatal(errs)
	}
	v, _ := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: "a", ReplayId: "rp-1"})
	replay := []kafkaio.Delivery{{Ctx: ctx, Msg: kafka.Message{Value: v}}}
	_ = r.HandleBatch(ctx, replay)
	_ = r.HandleBatch(ctx, replay) // the same replay again: once per replay
	if got := d.delivered(); len(got) != 4 || got[0] != "a" || got[1] != "b" || got[2] != "c" || got[3] != "a" {
		t.Fatalf("delivered %v, want a b c, then a once for the replay", got)
	}
}

// markingDest marks each event it delivers at once (Event.MarkDelivered),
// as a destination with no idempotency of its own does.
type markingDest struct{ dest }

func (d *markingDest) Deliver(ctx context.Context, events []*Event) []error {
	errs := d.dest.Deliver(ctx, events)
	for i, ev := range events {
		if errs == nil || errs[i] == nil {
			_ = ev.MarkDelivered(ctx)
		}
	}
	return errs
}

// recordingCP is a checkpoint that records each Mark's keys and refuses
// the keys in refuse once each.
type recordingCP struct {
	Checkpoint
	mu     sync.Mutex
	marks  [][]string
	refuse map[string]bool
}

func (c *recordingCP) Mark(ctx context.Context, keys []string) error {
	c.mu.Lock()
	c.marks = append(c.marks, keys)
	for _, k := range keys {
		if c.refuse[k] {
			delete(c.refuse, k)
			c.mu.Unlock()
			return errors.New("checkpoint store unavailable")
		}
	}
	c.mu.Unlock()
	return c.Checkpoint.Mark(ctx, keys)
}

func TestEventsTheDestinationMarkedAreNotMarkedAgain(t *testing.T) {
	key := func(id string) string {
		return CheckpointKey(&feedbackv1.FeedbackEvent{EventId: id, Source: "dl"})
	}
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	cp := &recordingCP{Checkpoint: RedisCheckpoint{RDB: rdb, Prefix: t.Name() + ":", TTL: time.Hour}, refuse: map[string]bool{key("b"): true}}
	d := &markingDest{}
	r := runner(t, d, &dlq{}, func(c *Config) { c.Checkpoint = cp })
	ctx := context.Background()
	if errs := r.HandleBatch(ctx, batchOf(t, "a", "b", "c")); errs != nil {
		t.Fatal(errs)
	}
	// a and c were marked one by one; b's mark failed, so the batch marks b alone.
	want := [][]string{{key("a")}, {key("b")}, {key("c")}, {key("b")}}
	if fmt.Sprint(cp.marks) != fmt.Sprint(want) {
		t.Fatalf("marks %v, want %v", cp.marks, want)
	}
	if errs := r.HandleBatch(ctx, batchOf(t, "a", "b", "c")); errs != nil { // redelivery after a crash
		t.Fatal(errs)
	}
	if got := d.delivered(); fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("delivered %v, want a b c once each", got)
	}
	// Outside a runtime marking does nothing.
	if err := (&Event{Feedback: &feedbackv1.FeedbackEvent{EventId: "x"}}).MarkDelivered(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFilteredUnjudgedAndUndecodableEvents(t *testing.T) {
	d := &dest{}
	q := &dlq{}
	filter, err := expr.CompileBool(`event.properties["tier"] == "gold"`)
	if err != nil {
		t.Fatal(err)
	}
	r := runner(t, d, q, func(c *Config) { c.Filter = filter })
	ev := func(id string, props map[string]string) []byte {
		e := &feedbackv1.FeedbackEvent{EventId: id, Properties: map[string]*structpb.Value{}}
		for k, v := range props {
			e.Properties[k] = structpb.NewStringValue(v)
		}
		b, _ := proto.Marshal(e)
		return b
	}
	ctx := context.Background()
	batch := []kafkaio.Delivery{
		{Ctx: ctx, Msg: kafka.Message{Value: ev("gold", map[string]string{"tier": "gold"})}},
		{Ctx: ctx, Msg: kafka.Message{Value: ev("silver", map[string]string{"tier": "silver"})}},
		{Ctx: ctx, Msg: kafka.Message{Value: ev("untiered", nil)}}, // no such key: cannot be judged
		{Ctx: ctx, Msg: kafka.Message{Value: []byte{0xff}}},
	}
	errs := r.HandleBatch(ctx, batch)
	if errs == nil || errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("results %v", errs)
	}
	if reason, ok := kafkaio.IsPermanent(errs[3]); !ok || reason != kafkaio.ReasonUndecodableRecord {
		t.Fatalf("undecodable record: %v", errs[3])
	}
	if got := d.delivered(); len(got) != 1 || got[0] != "gold" {
		t.Fatalf("delivered %v", got)
	}
	letters := q.letters(t)
	if len(letters) != 1 || letters[0].EventId != "untiered" || letters[0].ErrorClass != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT ||
		!strings.Contains(letters[0].Error, "no such key") {
		t.Fatalf("dead letters %v, want the unjudged event as permanent with the filter's error", letters)
	}
}

// gate is a destination whose deliveries block until released.
type gate struct {
	mu      sync.Mutex
	order   []string
	started chan string
	release chan struct{}
}

func (g *gate) Deliver(_ context.Context, events []*Event) []error {
	g.started <- events[0].Feedback.EventId
	<-g.release
	g.mu.Lock()
	g.order = append(g.order, events[0].Feedback.EventId)
	g.mu.Unlock()
	return nil
}

func TestThePriorityLaneIsDeliveredBeforeTheStandardOne(t *testing.T) {
	g := &gate{started: make(chan string, 4), release: make(chan struct{})}
	r := runner(t, g, &dlq{}, func(c *Config) { c.Concurrency, c.PriorityTopic = 1, "prio" })
	ctx := context.Background()
	lane := func(topic, id string) []kafkaio.Delivery {
		b := batchOf(t, id)
		b[0].Msg.Topic = topic
		return b
	}
	var wg sync.WaitGroup
	handle := func(b []kafkaio.Delivery) {
		wg.Add(1)
		go func() { defer wg.Done(); r.HandleBatch(ctx, b) }()
	}
	handle(lane("std", "s1"))
	if id := <-g.started; id != "s1" {
		t.Fatalf("first delivery %s", id)
	}
	handle(lane("std", "s2")) // waits for the one slot
	time.Sleep(50 * time.Millisecond)
	handle(lane("prio", "p1"))
	for deadline := time.Now().Add(5 * time.Second); ; {
		r.lanes.mu.Lock()
		waiting := r.lanes.prioWaiting
		r.lanes.mu.Unlock()
		if waiting == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the priority batch never waited for the slot")
		}
		time.Sleep(time.Millisecond)
	}
	close(g.release) // s1 finishes; p1 must get the slot before s2
	if id := <-g.started; id != "p1" {
		t.Fatalf("after s1 came %s, want the priority batch p1", id)
	}
	if id := <-g.started; id != "s2" {
		t.Fatalf("then %s, want s2", id)
	}
	wg.Wait()
}

func TestAPriorityBacklogHoldsTheStandardLaneButLiveTrafficDoesNot(t *testing.T) {
	g := &gate{started: make(chan string, 4), release: make(chan struct{})}
	r := runner(t, g, &dlq{}, func(c *Config) { c.PriorityTopic = "prio" }) // no concurrency limit
	ctx := context.Background()
	lane := func(topic, id string, behind int64) []kafkaio.Delivery {
		b := batchOf(t, id)
		b[0].Msg.Topic, b[0].Msg.Offset, b[0].Msg.HighWaterMark = topic, 10, 11+behind
		return b
	}
	var wg sync.WaitGroup
	handle := func(b []kafkaio.Delivery) {
		wg.Add(1)
		go func() { defer wg.Done(); r.HandleBatch(ctx, b) }()
	}
	// Live priority traffic (nothing behind it): the standard lane flows beside it.
	handle(lane("prio", "p-live", 0))
	<-g.started
	handle(lane("std", "s1", 0))
	select {
	case id := <-g.started:
		if id != "s1" {
			t.Fatalf("got %s", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a live priority batch held the standard lane up")
	}
	g.release <- struct{}{}
	g.release <- struct{}{}
	// A priority batch with 500 records behind it: the standard lane waits.
	handle(lane("prio", "p-backlog", 500))
	<-g.started
	handle(lane("std", "s2", 0))
	select {
	case id := <-g.started:
		t.Fatalf("%s started while the priority lane had a backlog", id)
	case <-time.After(300 * time.Millisecond):
	}
	g.release <- struct{}{} // the backlog batch ends; after the grace the standard one goes
	if id := <-g.started; id != "s2" {
		t.Fatalf("got %s", id)
	}
	close(g.release)
	wg.Wait()
}

func TestHTTPStatusClassification(t *testing.T) {
	for status, want := range map[int]sinkv1.ErrorClass{
		200: sinkv1.ErrorClass_ERROR_CLASS_UNSPECIFIED, 204: sinkv1.ErrorClass_ERROR_CLASS_UNSPECIFIED,
		400: sinkv1.ErrorClass_ERROR_CLASS_PERMANENT, 401: sinkv1.ErrorClass_ERROR_CLASS_PERMANENT,
		404: sinkv1.ErrorClass_ERROR_CLASS_PERMANENT, 410: sinkv1.ErrorClass_ERROR_CLASS_PERMANENT,
		422: sinkv1.ErrorClass_ERROR_CLASS_PERMANENT, 408: sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE,
		429: sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE, 500: sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE,
		503: sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE,
	} {
		err := HTTPStatus(status, http.Header{}, nil)
		if err == nil {
			if want != sinkv1.ErrorClass_ERROR_CLASS_UNSPECIFIED {
				t.Errorf("%d: nil error", status)
			}
			continue
		}
		if got, _, code := Classify(err); got != want || code != status {
			t.Errorf("%d: class %v status %d, want %v", status, got, code, want)
		}
	}
	date := time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
	if _, after, _ := Classify(HTTPStatus(503, http.Header{"Retry-After": {date}}, nil)); after < time.Second || after > 3*time.Second {
		t.Errorf("Retry-After as a date: %s", after)
	}
}

// Issue 10, item 3: an enricher killed right after producing wrote the same
// event twice a few offsets apart; the sink took both copies in one batch and
// delivered the event twice. A copy in the batch shares its first's fate.
func TestAnEventRepeatedWithinABatchIsDeliveredOnce(t *testing.T) {
	d := &dest{failWith: func(ev *feedbackv1.FeedbackEvent, attempt int) error {
		if ev.EventId == "b" && attempt < 2 {
			return HTTPStatus(503, http.Header{}, nil)
		}
		return nil
	}}
	q := &dlq{}
	batch := batchOf(t, "a", "b", "a", "c", "b", "a")
	if errs := runner(t, d, q, nil).HandleBatch(context.Background(), batch); errs != nil {
		t.Fatal(errs)
	}
	if got := d.delivered(); strings.Join(got, ",") != "a,c,b" {
		t.Fatalf("delivered %v, want each event once: a, c, then b after its retry", got)
	}

	// A copy of an event that fails for good is done with it (one outcome:
	// one dead letter), and a copy of one that cannot be delivered yet waits
	// with it.
	d2 := &dest{failWith: func(ev *feedbackv1.FeedbackEvent, _ int) error {
		if ev.EventId == "bad" {
			return Permanent(errors.New("rejected"))
		}
		return nil
	}}
	q2 := &dlq{}
	if errs := runner(t, d2, q2, nil).HandleBatch(context.Background(), batchOf(t, "bad", "ok", "bad")); errs != nil {
		t.Fatal(errs)
	}
	if dl := q2.letters(t); len(dl) != 1 {
		t.Fatalf("%d dead letters for one event sent twice", len(dl))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // stopping: nothing can be delivered
	d3 := &dest{failWith: func(*feedbackv1.FeedbackEvent, int) error { return HTTPStatus(503, http.Header{}, nil) }}
	errs := runner(t, d3, &dlq{}, nil).HandleBatch(ctx, batchOf(t, "x", "y", "x"))
	if errs == nil || errs[0] == nil || errs[2] == nil {
		t.Fatalf("results %v: the copy of an undelivered event must not be done", errs)
	}
}

// ctxDest records the trace context of each Deliver call.
type ctxDest struct {
	mu  sync.Mutex
	got []trace.SpanContext
}

func (d *ctxDest) Deliver(ctx context.Context, events []*Event) []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, trace.SpanContextFromContext(ctx))
	return nil
}

// A delivery call is traced by a "deliver <destination>" span, a child of the
// first event's; with no trace exporter (telemetry.SpansDropped) there is no
// span and the call carries the first event's trace context itself.
func TestADeliveryCallCarriesItsSpanOrWithSpansDroppedTheFirstEventsContext(t *testing.T) {
	prev, prevLog := otel.GetTracerProvider(), slog.Default()
	t.Cleanup(func() { otel.SetTracerProvider(prev); slog.SetDefault(prevLog) }) // after DroppingSpans's, which restores the recorder
	batch := batchOf(t, "e1", "e2")
	parent := trace.SpanContextFromContext(telemetry.NewTrace(context.Background())).WithTraceFlags(trace.FlagsSampled)
	for i := range batch {
		batch[i].Ctx = trace.ContextWithSpanContext(context.Background(), parent)
	}

	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	d := &ctxDest{}
	if errs := runner(t, d, &dlq{}, nil).HandleBatch(context.Background(), batch); errs != nil {
		t.Fatal(errs)
	}
	if len(d.got) != 1 || d.got[0].TraceID() != parent.TraceID() || d.got[0].SpanID() == parent.SpanID() {
		t.Fatalf("recording: delivery contexts %v, want one child of %v", d.got, parent)
	}
	if s := rec.Ended(); len(s) != 1 || s[0].Name() != "deliver test" || s[0].SpanContext().SpanID() != d.got[0].SpanID() {
		t.Fatalf("recorded spans %v", s)
	}

	telemetrytest.DroppingSpans(t)
	d = &ctxDest{}
	if errs := runner(t, d, &dlq{}, nil).HandleBatch(context.Background(), batch); errs != nil {
		t.Fatal(errs)
	}
	if len(d.got) != 1 || !d.got[0].Equal(parent) {
		t.Fatalf("spans dropped: delivery contexts %v, want the first event's %v", d.got, parent)
	}
}

// calls records each delivery's event ids.
type calls struct {
	mu  sync.Mutex
	ids [][]string
}

func (c *calls) Deliver(_ context.Context, events []*Event) []error {
	var ids []string
	for _, e := range events {
		ids = append(ids, e.Feedback.EventId)
	}
	c.mu.Lock()
	c.ids = append(c.ids, ids)
	c.mu.Unlock()
	return nil
}

// A batch holding both lanes' live records is one delivery; with a backlog
// behind its priority records, they are delivered first, on their own.
func TestABatchOfBothLanesIsOneDeliveryUnlessThePriorityLaneHasABacklog(t *testing.T) {
	for _, behind := range []int64{0, 500} {
		d := &calls{}
		r := runner(t, d, &dlq{}, func(c *Config) { c.PriorityTopic = "prio" })
		b := batchOf(t, "s1", "p1", "s2", "p2")
		for i := range b {
			b[i].Msg.Topic, b[i].Msg.Partition, b[i].Msg.Offset, b[i].Msg.HighWaterMark = "std", i, 10, 11
			if i%2 == 1 { // p1, p2
				b[i].Msg.Topic, b[i].Msg.HighWaterMark = "prio", 11+behind
			}
		}
		if errs := r.HandleBatch(context.Background(), b); errs != nil {
			t.Fatalf("behind %d: %v", behind, errs)
		}
		want := [][]string{{"s1", "p1", "s2", "p2"}}
		if behind > 0 {
			want = [][]string{{"p1", "p2"}, {"s1", "s2"}}
		}
		if fmt.Sprint(d.ids) != fmt.Sprint(want) {
			t.Fatalf("with %d records behind the priority lane's, deliveries %v; want %v", behind, d.ids, want)
		}
	}
}
