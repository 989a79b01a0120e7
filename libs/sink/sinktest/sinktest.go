// Package sinktest is the contract every destination passes, in process,
// against its local fake (as watermill's pubsub tests are for its
// publishers): one outcome per event; 5xx, timeouts and 429 retried, with
// the destination's Retry-After honoured; 4xx and rejected data permanent
// for that event while the others of the batch are delivered; a redelivered
// event, or one repeated within a batch, has no second outcome.
//
// A destination's test calls Run with a Harness over its fake. The suite
// drives the destination through the real sink runtime (sink.Runner), so
// what it checks is what the service does.
package sinktest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Failure is a way the fake fails an event's deliveries.
type Failure int

const (
	// Unavailable: a 5xx, a timeout or a dropped connection (retryable).
	Unavailable Failure = iota + 1
	// RateLimited: 429 (or the vendor's equivalent) with a Retry-After of
	// one second (retryable, after at least that long).
	RateLimited
	// Rejected: the destination refuses the event's data for good (4xx,
	// a validation error): dead-lettered, the others delivered.
	Rejected
)

func (f Failure) String() string {
	return [...]string{"", "unavailable", "rate limited", "rejected"}[f]
}

// Harness is a destination under test with its fake.
type Harness struct {
	// New returns the destination, connected to a fresh fake.
	New func(t *testing.T) sink.Destination
	// Outcomes returns, per event id, how many outcomes the fake recorded
	// (rows, tickets, messages, accepted deliveries).
	Outcomes func(t *testing.T) map[string]int
	// Fail makes the fake fail the next n deliveries of the event with id.
	// Failures a destination cannot meet (a database has no 429) are left
	// out of Supports.
	Fail     func(t *testing.T, id string, f Failure, n int)
	Supports []Failure
	// Checkpoint is the destination's checkpoint (default sink.Idempotent:
	// the destination dedupes on the event id itself).
	Checkpoint func(t *testing.T) sink.Checkpoint
	// Event, when set, adapts a suite event to what the destination needs
	// (an enrichment, a detractor score); it must keep the event id.
	Event func(ev *feedbackv1.FeedbackEvent)
}

// Records is an in-memory sink.Producer: the dead letters a runner writes
// (to any topic) and the other records a destination writes.
type Records struct {
	mu   sync.Mutex
	recs []kafkaio.Record
}

// Produce implements sink.Producer.
func (q *Records) Produce(_ context.Context, recs ...kafkaio.Record) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.recs = append(q.recs, recs...)
	return nil
}

// On returns the records written to topic.
func (q *Records) On(topic string) []kafkaio.Record {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []kafkaio.Record
	for _, r := range q.recs {
		if r.Topic == topic {
			out = append(out, r)
		}
	}
	return out
}

// Letters are the dead letters written to DLQTopic.
func (q *Records) Letters(t *testing.T) []*sinkv1.DeadLetter {
	var out []*sinkv1.DeadLetter
	for _, r := range q.On(DLQTopic) {
		var dl sinkv1.DeadLetter
		if err := proto.Unmarshal(r.Value, &dl); err != nil {
			t.Fatal(err)
		}
		out = append(out, &dl)
	}
	return out
}

type suite struct {
	h    Harness
	seq  int
	name string
}

// DLQTopic is the dead-letter topic of the suites' runners.
const DLQTopic = "dlq"

// Run runs the contract against the destination of h.
func Run(t *testing.T, h Harness) {
	supports := map[Failure]bool{}
	for _, f := range h.Supports {
		supports[f] = true
	}
	s := &suite{h: h, name: t.Name()}
	t.Run("every event has one outcome", s.once)
	t.Run("a redelivered event has no second outcome", s.redelivered)
	t.Run("an event repeated within a batch has one outcome", s.repeated)
	for _, f := range []Failure{Unavailable, RateLimited, Rejected} {
		if !supports[f] {
			t.Run(f.String(), func(t *testing.T) { t.Skip("not a failure this destination can have") })
			continue
		}
		t.Run(f.String(), func(t *testing.T) { s.failure(t, f) })
	}
}

func (s *suite) runner(t *testing.T, q *Records) *sink.Runner {
	cp := sink.Checkpoint(sink.Idempotent{})
	if s.h.Checkpoint != nil {
		cp = s.h.Checkpoint(t)
	}
	r, err := sink.New(sink.Config{Sink: "sink-test", DLQTopic: DLQTopic, DLQ: q, Checkpoint: cp,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		BackoffBase: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond, MaxAttempts: 5,
		Breaker: retry.NewBreaker(1000, time.Second, nil)}, s.h.New(t))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// batch returns n deliveries of new events (ids unique across the run).
func (s *suite) batch(t *testing.T, n int) ([]kafkaio.Delivery, []string) {
	out := make([]kafkaio.Delivery, n)
	ids := make([]string, n)
	now := time.Now()
	for i := range out {
		s.seq++
		id := fmt.Sprintf("sinktest-%d-%d", now.UnixNano()%1e9, s.seq)
		comment := "The export keeps failing."
		ev := &feedbackv1.FeedbackEvent{
			EventId: id, Source: "delighted", Provider: "delighted", ProviderEventType: "survey_response.created",
			Kind:    feedbackv1.Kind_KIND_RESPONSE_CREATED,
			Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r" + strconv.Itoa(s.seq)},
			Version: timestamppb.New(now), OccurredAt: timestamppb.New(now), ReceivedAt: timestamppb.New(now), NormalizedAt: timestamppb.New(now),
			Score:      &feedbackv1.Score{Value: 3, Min: 0, Max: 10},
			Segment:    feedbackv1.Segment_SEGMENT_DETRACTOR,
			Comment:    &comment,
			Respondent: &feedbackv1.Respondent{Email: "anna.mueller@example.de", Name: "Anna Müller"},
			Survey:     &feedbackv1.Survey{Id: "nps", Name: "NPS"},
			Permalink:  "https://app.delighted.com/r/" + id,
		}
		if s.h.Event != nil {
			s.h.Event(ev)
		}
		v, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Topic: "enriched", Partition: 0, Offset: int64(s.seq), Value: v}}
		ids[i] = id
	}
	return out, ids
}

func (s *suite) handle(t *testing.T, r *sink.Runner, batch []kafkaio.Delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if errs := r.HandleBatch(ctx, batch); errs != nil {
		t.Fatalf("batch not done: %v", errs)
	}
}

func (s *suite) expect(t *testing.T, ids []string, want int) {
	t.Helper()
	got := s.h.Outcomes(t)
	for _, id := range ids {
		if got[id] != want {
			t.Fatalf("event %s has %d outcomes at the destination, want %d", id, got[id], want)
		}
	}
}

func (s *suite) once(t *testing.T) {
	q := &Records{}
	r := s.runner(t, q)
	batch, ids := s.batch(t, 20)
	s.handle(t, r, batch)
	s.expect(t, ids, 1)
	if n := len(q.Letters(t)); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
}

func (s *suite) redelivered(t *testing.T) {
	q := &Records{}
	r := s.runner(t, q)
	batch, ids := s.batch(t, 5)
	s.handle(t, r, batch)
	// The same records again (a crash before the offset commit, a
	// rebalance), by the same runner and by a new one (a restart).
	s.handle(t, r, batch)
	s.handle(t, s.runner(t, q), batch)
	s.expect(t, ids, 1)
}

func (s *suite) repeated(t *testing.T) {
	q := &Records{}
	r := s.runner(t, q)
	batch, ids := s.batch(t, 4)
	// A producer that retried after a crash wrote events twice, a few
	// offsets apart.
	again := append(append([]kafkaio.Delivery{}, batch...), batch[1], batch[0], batch[3])
	s.handle(t, r, again)
	s.expect(t, ids, 1)
}

func (s *suite) failure(t *testing.T, f Failure) {
	q := &Records{}
	r := s.runner(t, q)
	batch, ids := s.batch(t, 6)
	victim := ids[2]
	s.h.Fail(t, victim, f, 2)
	start := time.Now()
	s.handle(t, r, batch)
	took := time.Since(start)
	dl := q.Letters(t)
	others := append(append([]string{}, ids[:2]...), ids[3:]...)
	s.expect(t, others, 1)
	switch f {
	case Unavailable, RateLimited:
		s.expect(t, []string{victim}, 1)
		if len(dl) != 0 {
			t.Fatalf("a %s failure that recovered was dead-lettered: %v", f, dl)
		}
		if f == RateLimited && took < 2*time.Second {
			t.Fatalf("two 429s with Retry-After: 1 were retried within %s: Retry-After was not honoured", took)
		}
	case Rejected:
		s.expect(t, []string{victim}, 0)
		if len(dl) != 1 || dl[0].EventId != victim || dl[0].ErrorClass != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT || len(dl[0].Attempts) != 1 {
			t.Fatalf("dead letters %v, want one permanent letter for %s after one attempt", dl, victim)
		}
	}
}

// MemoryCheckpoint is a sink.Checkpoint in memory, for destinations that
// are not idempotent themselves (the service uses RedisCheckpoint). Return
// the same one from Harness.Checkpoint for every runner: it outlives them,
// as Redis outlives a restart.
type MemoryCheckpoint struct {
	mu   sync.Mutex
	done map[string]bool
}

// Delivered implements sink.Checkpoint.
func (c *MemoryCheckpoint) Delivered(_ context.Context, keys []string) ([]bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]bool, len(keys))
	for i, k := range keys {
		out[i] = c.done[k]
	}
	return out, nil
}

// Mark implements sink.Checkpoint. Like RedisCheckpoint's, a mark whose
// context is done is refused: a process stopped in the middle of a batch
// records nothing more.
func (c *MemoryCheckpoint) Mark(ctx context.Context, keys []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = map[string]bool{}
	}
	for _, k := range keys {
		c.done[k] = true
	}
	return nil
}
