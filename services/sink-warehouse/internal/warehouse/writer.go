package warehouse

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/pbjson"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Writer inserts events into <schema>.feedback_events. It is the
// warehouse's sink.Destination: a batch is one INSERT ... SELECT FROM
// unnest(...) statement (one round trip, one transaction), idempotent on
// event_id; a deliberate replay overwrites its row instead.
type Writer struct {
	pool        *pgxpool.Pool
	insert      string
	upsert      string
	batchInsert string
	batchUpsert string
}

// columns of the insert, in order; types are the unnest array types.
var columns = []struct{ name, typ string }{
	{"_cl_received_at", "timestamptz"}, {"_cl_sequence", "int8"}, {"event_id", "text"}, {"source", "text"},
	{"provider", "text"}, {"kind", "text"}, {"provider_event_type", "text"}, {"subject_type", "text"},
	{"subject_id", "text"}, {"version", "timestamptz"}, {"occurred_at", "timestamptz"}, {"survey_type", "text"},
	{"score", "float8"}, {"score_min", "float8"}, {"score_max", "float8"}, {"segment", "text"}, {"comment", "text"},
	{"respondent_id", "text"}, {"respondent_email", "text"}, {"respondent_name", "text"}, {"tags", "text"},
	{"is_test", "bool"}, {"replay_id", "text"}, {"trace_id", "text"}, {"event", "jsonb"},
	{"lane", "text"}, {"labels", "text"},
	{"response_key", "text"}, {"ticket_system", "text"}, {"ticket_id", "text"}, {"ticket_stage", "text"}, {"ticket_created_at", "timestamptz"},
	{"raw_payload", "bytea"},
}

// NewWriter returns a writer for schema (already migrated).
func NewWriter(pool *pgxpool.Pool, schema string) *Writer {
	names, vals, arrays, sel, set := make([]string, len(columns)), make([]string, len(columns)), make([]string, len(columns)), make([]string, len(columns)), []string{}
	for i, c := range columns {
		names[i] = c.name
		vals[i] = "$" + strconv.Itoa(i+1)
		arrays[i] = "$" + strconv.Itoa(i+1) + "::" + c.typ + "[]"
		sel[i] = "u.c" + strconv.Itoa(i+1)
		if c.typ == "jsonb" {
			// The document travels as text and is cast once per row: pgx
			// encodes a text array without reflection (columnsOf).
			arrays[i] = "$" + strconv.Itoa(i+1) + "::text[]"
			sel[i] = "u.c" + strconv.Itoa(i+1) + "::jsonb"
		}
		if c.name == "tags" || c.name == "labels" {
			// Arrays travel as a text[] literal per row (unnest cannot carry a
			// text[] per row), cast once, rather than as a JSON array taken
			// apart by a subquery per row (docs/benchmarks.md).
			vals[i] = "$" + strconv.Itoa(i+1) + "::text::text[]"
			sel[i] = "u.c" + strconv.Itoa(i+1) + "::text[]"
		}
		if c.name != "event_id" {
			set = append(set, c.name+" = excluded."+c.name)
		}
	}
	aliases := make([]string, len(columns))
	for i := range columns {
		aliases[i] = "c" + strconv.Itoa(i+1)
	}
	table := pgx.Identifier{schema, "feedback_events"}.Sanitize()
	cols := strings.Join(names, ", ")
	single := `INSERT INTO ` + table + ` (` + cols + `) VALUES (` + strings.Join(vals, ", ") + `) ON CONFLICT (event_id) `
	batch := `INSERT INTO ` + table + ` (` + cols + `) SELECT ` + strings.Join(sel, ", ") +
		` FROM unnest(` + strings.Join(arrays, ", ") + `) AS u(` + strings.Join(aliases, ", ") + `) ON CONFLICT (event_id) `
	// A deliberate replay overwrites the row (e.g. after a mapping fix).
	update := `DO UPDATE SET _cl_batched_at = now(), ` + strings.Join(set, ", ")
	return &Writer{
		pool: pool, insert: single + `DO NOTHING`, upsert: single + update,
		batchInsert: batch + `DO NOTHING`, batchUpsert: batch + update,
	}
}

// Deliver implements sink.Destination: the whole batch in one statement. If
// PostgreSQL rejects the batch for its data, each row is written on its own
// so that only the rows it rejects fail (permanently: dead-lettered).
func (w *Writer) Deliver(ctx context.Context, events []*sink.Event) []error {
	errs := make([]error, len(events))
	var fresh, replays []int
	rows := make([][]any, len(events))
	failed := false
	for i, e := range events {
		js, err := document(e.Feedback)
		if err != nil {
			errs[i], failed = sink.Permanent(fmt.Errorf("event %s cannot be encoded as JSON: %w", e.Feedback.EventId, err)), true
			continue
		}
		rows[i] = row(e.Feedback, js, trace.SpanContextFromContext(e.Ctx).TraceID().String())
		if e.Feedback.ReplayId != "" {
			replays = append(replays, i)
		} else {
			fresh = append(fresh, i)
		}
	}
	for _, part := range []struct {
		idx          []int
		batch, first string
	}{{fresh, w.batchInsert, w.insert}, {lastPerEvent(events, replays), w.batchUpsert, w.upsert}} {
		if len(part.idx) == 0 {
			continue
		}
		_, err := w.pool.Exec(ctx, part.batch, columnsOf(rows, part.idx)...)
		if err == nil {
			continue
		}
		if !isDataError(err) {
			for _, i := range part.idx {
				errs[i], failed = sink.Retryable(fmt.Errorf("insert %d events: %w", len(part.idx), err), 0), true
			}
			continue
		}
		for _, i := range part.idx { // find the rows PostgreSQL rejects
			if _, err := w.pool.Exec(ctx, part.first, rows[i]...); err != nil {
				errs[i], failed = fmt.Errorf("insert event %s: %w", events[i].Feedback.EventId, err), true
				if isDataError(err) {
					errs[i] = sink.Permanent(errs[i])
				}
			}
		}
	}
	if !failed {
		return nil
	}
	return errs
}

// lastPerEvent keeps, per event id, the last of the replayed events (an
// upsert may not touch one row twice in a statement).
func lastPerEvent(events []*sink.Event, idx []int) []int {
	if len(idx) < 2 {
		return idx
	}
	last := map[string]int{}
	for _, i := range idx {
		last[events[i].Feedback.EventId] = i
	}
	out := idx[:0:0]
	for _, i := range idx {
		if last[events[i].Feedback.EventId] == i {
			out = append(out, i)
		}
	}
	return out
}

// columnsOf turns rows into one array argument per column. The arrays are
// of pointers to types implementing pgx's valuer for their column (a nil
// one is NULL): pgx encodes them without reflection, and boxing a pointer
// does not allocate. For []*string, []*time.Time and []*float64 its generic
// path dereferenced each element by reflection and boxed the value: 20 % of
// sink-warehouse's CPU in the pipeline's drain (docs/benchmarks.md).
func columnsOf(rows [][]any, idx []int) []any {
	out := make([]any, len(columns))
	for c, col := range columns {
		switch col.typ {
		case "timestamptz":
			a := make(cells[timeCell], len(idx))
			for k, i := range idx {
				a[k] = (*timeCell)(rows[i][c].(*time.Time))
			}
			out[c] = a
		case "int8":
			out[c] = column[int64](rows, idx, c)
		case "float8":
			a := make(cells[floatCell], len(idx))
			for k, i := range idx {
				a[k] = (*floatCell)(rows[i][c].(*float64))
			}
			out[c] = a
		case "bool":
			out[c] = column[bool](rows, idx, c)
		case "bytea":
			a := make(cells[byteaCell], len(idx))
			owned := make([]byteaCell, len(idx)) // one allocation for the column, as text's
			for k, i := range idx {
				if b := rows[i][c].([]byte); b != nil {
					owned[k] = b
					a[k] = &owned[k]
				}
			}
			out[c] = a
		default: // text, and jsonb as its text (cast in the statement)
			a := make(cells[textCell], len(idx))
			owned := make([]textCell, len(idx)) // one allocation for the column's non-pointer values
			for k, i := range idx {
				switch v := rows[i][c].(type) {
				case *string:
					a[k] = (*textCell)(v)
				case string:
					owned[k] = textCell(v)
					a[k] = &owned[k]
				case []byte:
					owned[k] = textCell(v)
					a[k] = &owned[k]
				}
			}
			out[c] = a
		}
	}
	return out
}

// column collects column c of the rows at idx, each of type T.
func column[T any](rows [][]any, idx []int, c int) []T {
	a := make([]T, len(idx))
	for k, i := range idx {
		a[k] = rows[i][c].(T)
	}
	return a
}

// cells is a one-dimensional array parameter (pgtype.ArrayGetter) of
// pointers; a nil element is NULL.
type cells[T any] []*T

func (a cells[T]) Dimensions() []pgtype.ArrayDimension {
	return []pgtype.ArrayDimension{{Length: int32(len(a)), LowerBound: 1}}
}
func (a cells[T]) Index(i int) any { return a[i] }
func (a cells[T]) IndexType() any  { return (*T)(nil) }

type (
	textCell  string
	timeCell  time.Time
	floatCell float64
	byteaCell []byte
)

func (c *byteaCell) BytesValue() ([]byte, error) { return *c, nil }

func (c *textCell) TextValue() (pgtype.Text, error) {
	return pgtype.Text{String: string(*c), Valid: true}, nil
}

func (c *timeCell) TimestamptzValue() (pgtype.Timestamptz, error) {
	return pgtype.Timestamptz{Time: time.Time(*c), Valid: true}, nil
}

func (c *floatCell) Float64Value() (pgtype.Float8, error) {
	return pgtype.Float8{Float64: float64(*c), Valid: true}, nil
}

// isDataError reports whether PostgreSQL rejected the data itself (classes
// 22 data exception and 23 integrity constraint violation): retrying the
// same rows cannot succeed.
func isDataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
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
	fu := ev.GetFollowUp()
	var ticketCreated *time.Time
	if fu.GetTicketCreatedAt() != nil {
		t := fu.GetTicketCreatedAt().AsTime()
		ticketCreated = &t
	}
	return []any{
		received, seq, ev.EventId, ev.Source, ev.Provider, lower(ev.Kind.String(), "KIND_"), ev.ProviderEventType,
		lower(ev.GetSubject().GetType().String(), "SUBJECT_TYPE_"), ev.GetSubject().GetId(),
		version, occurred, nullIf(lower(ev.GetSurvey().GetType().String(), "SURVEY_TYPE_"), "unspecified"),
		score, smin, smax, nullIf(lower(ev.Segment.String(), "SEGMENT_"), "unspecified"), ev.Comment,
		nullIf(ev.GetRespondent().GetId(), ""), nullIf(ev.GetRespondent().GetEmail(), ""), nullIf(ev.GetRespondent().GetName(), ""),
		textArray(ev.Tags), ev.Test, nullIf(ev.ReplayId, ""), nullIf(traceID, "00000000000000000000000000000000"), js,
		nullIf(lower(ev.GetEnrichment().GetLane().String(), "LANE_"), "unspecified"), textArray(ev.GetEnrichment().GetLabels()),
		nullIf(fu.GetResponseKey(), ""), nullIf(fu.GetSystem(), ""), nullIf(fu.GetTicketId(), ""),
		nullIf(lower(fu.GetStage().String(), "FOLLOW_UP_STAGE_"), "unspecified"), ticketCreated,
		nilIfEmpty(ev.RawPayload),
	}
}

// document is the event column: the event as JSON without its raw payload.
// The copy is shallow (it shares every other field with ev) and lists the
// fields by hand: protoreflect's Range and Set cost 8 % of the sink's CPU.
// TestTheDocumentIsTheEventWithoutItsRawPayload fills events until every
// field of the contract was set, so a field added to it and missing here
// fails that test.
func document(ev *feedbackv1.FeedbackEvent) ([]byte, error) {
	if len(ev.RawPayload) == 0 {
		return pbjson.Marshal(ev)
	}
	return pbjson.Marshal(&feedbackv1.FeedbackEvent{
		EventId: ev.EventId, Source: ev.Source, Provider: ev.Provider, ProviderEventType: ev.ProviderEventType,
		Kind: ev.Kind, OccurredAt: ev.OccurredAt, ReceivedAt: ev.ReceivedAt, NormalizedAt: ev.NormalizedAt,
		Subject: ev.Subject, Version: ev.Version, Survey: ev.Survey, Score: ev.Score, Segment: ev.Segment,
		Comment: ev.Comment, Answers: ev.Answers, Respondent: ev.Respondent, Tags: ev.Tags, Properties: ev.Properties,
		Quality: ev.Quality, Test: ev.Test, ReplayId: ev.ReplayId, Permalink: ev.Permalink, Enrichment: ev.Enrichment,
		RawRef: ev.RawRef, FollowUp: ev.FollowUp, Origin: ev.Origin,
	})
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// textArray is ss as a PostgreSQL text[] literal: every element quoted, a
// quote or backslash in it escaped with a backslash.
func textArray(ss []string) string {
	n := 2
	for _, s := range ss {
		n += len(s) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				b = append(b, '\\')
			}
			b = append(b, s[j])
		}
		b = append(b, '"')
	}
	return string(append(b, '}'))
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
