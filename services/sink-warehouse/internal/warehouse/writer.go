package warehouse

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/closedloop/closedloop/libs/feedback"
	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Writer inserts events into <schema>.feedback_events.
type Writer struct {
	pool   *pgxpool.Pool
	insert string
	upsert string
}

// NewWriter returns a writer for schema (already migrated).
func NewWriter(pool *pgxpool.Pool, schema string) *Writer {
	cols := `_cl_received_at, _cl_sequence, event_id, source, provider, kind, provider_event_type, subject_type, subject_id,
		version, occurred_at, survey_type, score, score_min, score_max, segment, comment, respondent_id, respondent_email,
		respondent_name, tags, is_test, replay_id, trace_id, event`
	vals := `$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25`
	table := pgx.Identifier{schema, "feedback_events"}.Sanitize()
	base := `INSERT INTO ` + table + ` (` + cols + `) VALUES (` + vals + `) ON CONFLICT (event_id) `
	var set []string
	for _, c := range strings.Split(cols, ",") {
		c = strings.TrimSpace(c)
		if c != "event_id" {
			set = append(set, c+" = excluded."+c)
		}
	}
	return &Writer{
		pool:   pool,
		insert: base + `DO NOTHING`,
		// A deliberate replay overwrites the row (e.g. after a mapping fix).
		upsert: base + `DO UPDATE SET _cl_batched_at = now(), ` + strings.Join(set, ", "),
	}
}

// Handle implements kafkaio.Handler: one row per event_id, whatever the
// number of deliveries.
func (w *Writer) Handle(ctx context.Context, m kafka.Message) error {
	ev, err := feedback.Decode(m.Value)
	if err != nil {
		return err
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
	if err != nil {
		return kafkaio.Permanent("unencodable_event", err)
	}
	args := row(ev, js, trace.SpanContextFromContext(ctx).TraceID().String())
	stmt := w.insert
	if ev.ReplayId != "" {
		stmt = w.upsert
	}
	if _, err := w.pool.Exec(ctx, stmt, args...); err != nil {
		return fmt.Errorf("insert event %s: %w", ev.EventId, err)
	}
	return nil
}

func row(ev *feedbackv1.FeedbackEvent, js []byte, traceID string) []any {
	var version, occurred, received *time.Time
	if ev.Version != nil {
		t := ev.Version.AsTime()
		version = &t
	}
	if ev.OccurredAt != nil {
		t := ev.OccurredAt.AsTime()
		occurred = &t
	}
	rcv := time.Now()
	if ev.ReceivedAt != nil {
		rcv = ev.ReceivedAt.AsTime()
	}
	received = &rcv
	// The sequence orders the versions of a subject: the version time in
	// microseconds, else the receive time.
	seq := received.UnixMicro()
	if version != nil {
		seq = version.UnixMicro()
	}
	var score, smin, smax *float64
	if s := ev.Score; s != nil {
		score, smin, smax = &s.Value, &s.Min, &s.Max
	}
	tags := ev.Tags
	if tags == nil {
		tags = []string{}
	}
	return []any{
		received, seq, ev.EventId, ev.Source, ev.Provider, lower(ev.Kind.String(), "KIND_"), ev.ProviderEventType,
		lower(ev.GetSubject().GetType().String(), "SUBJECT_TYPE_"), ev.GetSubject().GetId(),
		version, occurred, nullIf(lower(ev.GetSurvey().GetType().String(), "SURVEY_TYPE_"), "unspecified"),
		score, smin, smax, nullIf(lower(ev.Segment.String(), "SEGMENT_"), "unspecified"), ev.Comment,
		nullIf(ev.GetRespondent().GetId(), ""), nullIf(ev.GetRespondent().GetEmail(), ""), nullIf(ev.GetRespondent().GetName(), ""),
		tags, ev.Test, nullIf(ev.ReplayId, ""), nullIf(traceID, "00000000000000000000000000000000"), js,
	}
}

func lower(enum, prefix string) string { return strings.ToLower(strings.TrimPrefix(enum, prefix)) }

func nullIf(s, empty string) *string {
	if s == empty {
		return nil
	}
	return &s
}

// Ping is the "postgres" readiness check.
func Ping(pool *pgxpool.Pool) func(ctx context.Context) error {
	return func(ctx context.Context) error { return pool.Ping(ctx) }
}
