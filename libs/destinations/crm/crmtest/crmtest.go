// Package crmtest is the contract every CRM destination passes against its
// fake, besides the destination contract (sinktest): a contact never goes
// back to older feedback whatever order the events come in; an unsubscribe
// is applied once, recorded once per outcome (applied, already opted out,
// unknown contact) and never dead-lettered for an unknown email; nothing
// is left pending.
package crmtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/destinations/crm"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Records holds what a CRM destination and its runner write: dead letters
// (sinktest.Records) and propagations.
type Records struct{ sinktest.Records }

// Propagations are the Propagation records written so far.
func (r *Records) Propagations(t *testing.T) []*sinkv1.Propagation {
	var out []*sinkv1.Propagation
	for _, rec := range r.On(kafkaio.NewTopics("").Unsubscribes()) {
		var p sinkv1.Propagation
		if err := proto.Unmarshal(rec.Value, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, &p)
	}
	return out
}

// Env completes a kind env for a test: its records go to recs.
func Env(env sink.KindEnv, recs *Records) sink.KindEnv {
	env.Records, env.Topics, env.Sink = recs, kafkaio.NewTopics(""), "sink-test"
	if env.Log == nil {
		env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return env
}

// Harness is a CRM destination with its fake.
type Harness struct {
	// New returns the destination (built with Env(…, Records)), connected
	// to a fresh fake, and its records.
	New func(t *testing.T) (sink.Destination, *Records)
	// AddContact makes the CRM know email.
	AddContact func(t *testing.T, email string)
	// Field is a contact's value of a feedback field (crm.Fields key), as
	// the CRM holds it.
	Field func(t *testing.T, email, key string) string
	// OptedOut says whether the CRM has the email opted out; OptOuts is
	// how many opt-outs of email it applied.
	OptedOut func(t *testing.T, email string) bool
	OptOuts  func(t *testing.T, email string) int
	// Pending is the destination's count of pending unsubscribes.
	Pending func(t *testing.T) int64
}

// Run runs the CRM contract.
func Run(t *testing.T, h Harness) {
	s := &suite{h: h, run: strconv.FormatInt(time.Now().UnixNano()%1e9, 36)}
	t.Run("a contact keeps its newest feedback whatever the order", s.ordering)
	t.Run("an unsubscribe is applied once and recorded", s.unsubscribe)
	t.Run("an unsubscribe of an unknown email is recorded, not dead-lettered", s.unknown)
}

type suite struct {
	h   Harness
	run string
	seq int
}

func (s *suite) email(name string) string {
	s.seq++
	return fmt.Sprintf("%s.%s.%d@example.com", name, s.run, s.seq)
}

func (s *suite) runner(t *testing.T, d sink.Destination, recs *Records) *sink.Runner {
	r, err := sink.New(sink.Config{Sink: "sink-test", DLQTopic: sinktest.DLQTopic, DLQ: recs, Checkpoint: sink.Idempotent{},
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		BackoffBase: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond, MaxAttempts: 5,
		Breaker: retry.NewBreaker(1000, time.Second, nil)}, d)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Response is a response event of email given at `at` with score.
func Response(id, email string, at time.Time, score float64) *feedbackv1.FeedbackEvent {
	seg := feedbackv1.Segment_SEGMENT_PROMOTER
	if score <= 6 {
		seg = feedbackv1.Segment_SEGMENT_DETRACTOR
	}
	return &feedbackv1.FeedbackEvent{EventId: id, Source: "delighted", Provider: "delighted", ProviderEventType: "survey_response.created",
		Kind:    feedbackv1.Kind_KIND_RESPONSE_CREATED,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r-" + id},
		Version: timestamppb.New(at), OccurredAt: timestamppb.New(at), ReceivedAt: timestamppb.Now(), NormalizedAt: timestamppb.Now(),
		Score: &feedbackv1.Score{Value: score, Min: 0, Max: 10}, Segment: seg,
		Respondent: &feedbackv1.Respondent{Email: email, Name: "Test Person"}, Survey: &feedbackv1.Survey{Id: "nps", Name: "NPS"},
		Permalink: "https://app.delighted.com/r/" + id}
}

// Unsubscribe is an unsubscribe event of email.
func Unsubscribe(id, email string) *feedbackv1.FeedbackEvent {
	now := time.Now()
	return &feedbackv1.FeedbackEvent{EventId: id, Source: "delighted", Provider: "delighted", ProviderEventType: "unsubscribe.created",
		Kind:    feedbackv1.Kind_KIND_UNSUBSCRIBED,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_PERSON, Id: "p-" + email},
		Version: timestamppb.New(now), OccurredAt: timestamppb.New(now), ReceivedAt: timestamppb.New(now.Add(-time.Second)), NormalizedAt: timestamppb.Now(),
		Respondent: &feedbackv1.Respondent{Email: email, Id: "p-" + email}}
}

func (s *suite) deliver(t *testing.T, r *sink.Runner, evs ...*feedbackv1.FeedbackEvent) {
	t.Helper()
	batch := make([]kafkaio.Delivery, len(evs))
	for i, ev := range evs {
		v, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		s.seq++
		batch[i] = kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Topic: "enriched", Offset: int64(s.seq), Value: v}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if errs := r.HandleBatch(ctx, batch); errs != nil {
		t.Fatalf("batch not done: %v", errs)
	}
}

func (s *suite) ordering(t *testing.T) {
	d, recs := s.h.New(t)
	r := s.runner(t, d, recs)
	a, b := s.email("order-a"), s.email("order-b")
	s.h.AddContact(t, a)
	s.h.AddContact(t, b)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	oldA, newA := Response(s.run+"-a1", a, base, 9), Response(s.run+"-a2", a, base.Add(time.Minute), 3)
	oldB, newB := Response(s.run+"-b1", b, base, 2), Response(s.run+"-b2", b, base.Add(time.Minute), 10)
	// The newest first, then the old ones replayed (alone, with the new
	// ones again, by another runner as after a restart).
	s.deliver(t, r, newA, newB)
	s.deliver(t, r, oldA)
	s.deliver(t, r, oldB, oldA)
	s.deliver(t, s.runner(t, d, recs), oldA, newA, oldB)
	// A batch holding both, oldest last.
	c := s.email("order-c")
	s.h.AddContact(t, c)
	s.deliver(t, r, Response(s.run+"-c2", c, base.Add(time.Minute), 4), Response(s.run+"-c1", c, base, 8))
	for _, want := range []struct {
		email, score, event string
		at                  time.Time
	}{{a, "3", newA.EventId, base.Add(time.Minute)}, {b, "10", newB.EventId, base.Add(time.Minute)}, {c, "4", s.run + "-c2", base.Add(time.Minute)}} {
		if got := s.h.Field(t, want.email, "last_score"); got != want.score {
			t.Errorf("%s: last_score %q, want %q (the newest feedback's)", want.email, got, want.score)
		}
		if got := s.h.Field(t, want.email, "event_id"); got != want.event {
			t.Errorf("%s: event_id %q, want %q", want.email, got, want.event)
		}
		got, err := time.Parse(time.RFC3339, s.h.Field(t, want.email, crm.FeedbackAt))
		if err != nil || !got.Equal(want.at) {
			t.Errorf("%s: feedback_at %v (%v), want %v", want.email, got, err, want.at)
		}
	}
	if dl := recs.Letters(t); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}
}

func (s *suite) unsubscribe(t *testing.T) {
	d, recs := s.h.New(t)
	r := s.runner(t, d, recs)
	known := s.email("optout")
	s.h.AddContact(t, known)
	ev := Unsubscribe(s.run+"-u1", known)
	s.deliver(t, r, ev)
	// Delivered again (a crash before the offset commit, no checkpoint):
	// the outcome is recorded again, the CRM not called again.
	s.deliver(t, s.runner(t, d, recs), ev)
	if !s.h.OptedOut(t, known) {
		t.Fatalf("%s is not opted out", known)
	}
	if n := s.h.OptOuts(t, known); n != 1 {
		t.Fatalf("%s opted out %d times, want once", known, n)
	}
	// Another unsubscribe of the same person (a second provider).
	s.deliver(t, r, Unsubscribe(s.run+"-u2", known))
	ps := recs.Propagations(t)
	if len(ps) != 3 || ps[0].Result != sinkv1.PropagationResult_PROPAGATION_RESULT_APPLIED || !proto.Equal(ps[0], ps[1]) ||
		ps[2].Result != sinkv1.PropagationResult_PROPAGATION_RESULT_ALREADY_OPTED_OUT {
		t.Fatalf("propagations %v: want applied (recorded twice, the same) then already_opted_out", ps)
	}
	p := ps[0]
	if p.Email != known || p.EventId != ev.EventId || p.Destination == "" || p.Kind == "" || p.Sink != "sink-test" ||
		p.AppliedAt.AsTime().Before(p.ReceivedAt.AsTime()) || p.Detail == "" {
		t.Fatalf("propagation %v: want who, which CRM, when received and applied, what changed", p)
	}
	if n := s.h.Pending(t); n != 0 {
		t.Fatalf("%d unsubscribes still pending", n)
	}
}

func (s *suite) unknown(t *testing.T) {
	d, recs := s.h.New(t)
	r := s.runner(t, d, recs)
	stranger := s.email("stranger")
	s.deliver(t, r, Unsubscribe(s.run+"-u3", stranger))
	ps := recs.Propagations(t)
	if len(ps) != 1 || ps[0].Result != sinkv1.PropagationResult_PROPAGATION_RESULT_UNKNOWN_CONTACT {
		t.Fatalf("propagations %v: want one unknown_contact", ps)
	}
	if dl := recs.Letters(t); len(dl) != 0 {
		t.Fatalf("an unsubscribe of an unknown email was dead-lettered: %v", dl)
	}
	if n := s.h.Pending(t); n != 0 {
		t.Fatalf("%d unsubscribes still pending", n)
	}
}

// Deliver hands the events to d directly, as one batch of first attempts
// (no runner: a test reads each event's error).
func Deliver(t *testing.T, d sink.Destination, evs ...*feedbackv1.FeedbackEvent) []error {
	t.Helper()
	batch := make([]*sink.Event, len(evs))
	for i, ev := range evs {
		batch[i] = &sink.Event{Ctx: context.Background(), Feedback: ev, Attempt: 1}
	}
	return d.Deliver(context.Background(), batch)
}
