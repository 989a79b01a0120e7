// Package normalize is the normalizer's record handler: decode the
// RawWebhook, map it, deduplicate it in Redis (two-phase) and produce the
// FeedbackEvent to the normalized topic, keyed by subject.
package normalize

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/idempotency"
	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/services/normalizer/internal/mapping"
)

// Deduper is the part of idempotency.Store the handler needs.
type Deduper interface {
	Claim(ctx context.Context, scope string, ids ...string) (idempotency.Outcome, error)
	Complete(ctx context.Context, scope string, ttl time.Duration, ids ...string) error
	Release(ctx context.Context, scope string, ids ...string) error
}

// Producer is the part of kafkaio.Producer the handler needs.
type Producer interface {
	Produce(ctx context.Context, recs ...kafkaio.Record) error
}

// DriftObserver records the field paths of authentic events (package drift).
type DriftObserver interface {
	Observe(ctx context.Context, provider, eventType, eventID string, body []byte) ([]string, error)
}

// Options configure the Handler.
type Options struct {
	// Drift, when set, is told the body of every event that is processed.
	Drift           DriftObserver
	Dedupe          Deduper
	Producer        Producer
	NormalizedTopic string
	// TTL returns the dedupe TTL of a source (its dedupe_ttl, default 72h).
	TTL func(source string) time.Duration
	Log *slog.Logger
	Now func() time.Time
}

// Handler handles raw-topic records.
type Handler struct {
	o      Options
	dedupe metric.Int64Counter
}

// New returns a Handler.
func New(o Options) *Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Handler{o: o}
	h.dedupe, _ = otel.Meter("github.com/closedloop/closedloop/services/normalizer").Int64Counter("closedloop.normalizer.dedupe",
		metric.WithDescription("Dedupe decisions: result=miss (new event), hit (duplicate dropped), in_progress (claimed elsewhere; retried)."))
	return h
}

// Keys returns the dedupe ids of an event: its event id, and its subject
// version (kind-agnostic and typed, so a backfilled copy of a webhook
// response is caught while a person id never collides with a response id).
func Keys(ev *feedbackv1.FeedbackEvent) []string {
	ids := []string{"evt:" + ev.EventId}
	if s := ev.GetSubject(); s.GetId() != "" && ev.Version != nil {
		ids = append(ids, "subj:"+strconv.Itoa(int(s.Type))+":"+s.Id+":"+strconv.FormatInt(ev.Version.AsTime().UnixNano(), 10))
	}
	return ids
}

// Scope is the dedupe scope of an event: its source, and its replay id when
// an operator replayed it (so a replay is processed again).
func Scope(ev *feedbackv1.FeedbackEvent) string {
	if ev.ReplayId != "" {
		return ev.Source + "/replay:" + ev.ReplayId
	}
	return ev.Source
}

// SubjectKey is the record key on the normalized topic: all versions of a
// subject land on one partition, in order.
func SubjectKey(ev *feedbackv1.FeedbackEvent) []byte {
	return []byte(ev.Source + "/" + ev.GetSubject().GetType().String() + "/" + ev.GetSubject().GetId())
}

// Handle implements kafkaio.Handler.
func (h *Handler) Handle(ctx context.Context, m kafka.Message) error {
	var raw feedbackv1.RawWebhook
	if err := proto.Unmarshal(m.Value, &raw); err != nil {
		return kafkaio.Permanent(mapping.ReasonUndecodableRecord, err)
	}
	ev, err := mapping.Map(&raw, h.o.Now())
	if err != nil {
		return err // Permanent: quarantined with its reason by the consumer
	}
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("closedloop.event_id", ev.EventId), attribute.String("closedloop.source", ev.Source))

	scope, ids := Scope(ev), Keys(ev)
	outcome, err := h.o.Dedupe.Claim(ctx, scope, ids...)
	if err != nil {
		// Redis is down: fail the attempt; the consumer retries with backoff
		// and the partition waits. Dedupe is never skipped.
		return fmt.Errorf("dedupe unavailable: %w", err)
	}
	src := attribute.String("source", ev.Source)
	switch outcome {
	case idempotency.Duplicate:
		h.dedupe.Add(ctx, 1, metric.WithAttributes(src, attribute.String("result", "hit")))
		h.o.Log.DebugContext(ctx, "duplicate dropped", "event_id", ev.EventId, "source", ev.Source)
		return nil
	case idempotency.InProgress:
		h.dedupe.Add(ctx, 1, metric.WithAttributes(src, attribute.String("result", "in_progress")))
		return idempotency.ErrInProgress
	}
	h.dedupe.Add(ctx, 1, metric.WithAttributes(src, attribute.String("result", "miss")))
	if h.o.Drift != nil {
		// Observability only: a failure is logged, and the paths are tried
		// again with the next event that carries them.
		if drifted, err := h.o.Drift.Observe(ctx, ev.Provider, ev.ProviderEventType, ev.EventId, raw.Body); err != nil {
			h.o.Log.WarnContext(ctx, "schema drift not recorded", "error", err.Error())
		} else if len(drifted) > 0 {
			h.o.Log.InfoContext(ctx, "new fields in provider payloads", "provider", ev.Provider, "event_type", ev.ProviderEventType,
				"event_id", ev.EventId, "paths", drifted)
		}
	}

	value, err := proto.Marshal(ev)
	if err != nil {
		_ = h.o.Dedupe.Release(ctx, scope, ids...)
		return fmt.Errorf("encode FeedbackEvent: %w", err)
	}
	if err := h.o.Producer.Produce(ctx, kafkaio.Record{Topic: h.o.NormalizedTopic, Key: SubjectKey(ev), Value: value}); err != nil {
		if rerr := h.o.Dedupe.Release(ctx, scope, ids...); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	// The event is durable downstream. If this mark fails the claim expires
	// and a redelivery produces the event again: the documented window.
	if err := h.o.Dedupe.Complete(ctx, scope, h.o.TTL(ev.Source), ids...); err != nil {
		h.o.Log.WarnContext(ctx, "dedupe mark failed after produce; a redelivery may repeat this event", "event_id", ev.EventId, "error", err.Error())
	}
	h.o.Log.DebugContext(ctx, "event normalized", "event_id", ev.EventId, "kind", ev.Kind.String(), "subject", ev.GetSubject().GetId())
	return nil
}
