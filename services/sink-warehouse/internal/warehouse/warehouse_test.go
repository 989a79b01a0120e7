package warehouse

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/pbjson"
	"github.com/closedloop/closedloop/libs/pbjson/pbjsontest"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

func pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pg := localinfra.PostgresForTest(t)
	p, err := pgxpool.New(context.Background(), pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func event(id, subject string, version int64, score float64, replay string) *sink.Event {
	comment := "ok"
	return &sink.Event{Ctx: context.Background(), Feedback: &feedbackv1.FeedbackEvent{
		EventId: id, Source: "dl", Provider: "delighted", Kind: feedbackv1.Kind_KIND_RESPONSE_UPDATED,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: subject},
		Version: timestamppb.New(time.Unix(version, 0)), OccurredAt: timestamppb.New(time.Unix(version, 0)),
		ReceivedAt: timestamppb.Now(), Survey: &feedbackv1.Survey{Type: feedbackv1.SurveyType_SURVEY_TYPE_NPS},
		Score: &feedbackv1.Score{Value: score, Min: 0, Max: 10}, Segment: feedbackv1.Segment_SEGMENT_PROMOTER,
		Comment: &comment, Respondent: &feedbackv1.Respondent{Email: "a@example.com"}, ReplayId: replay,
		Tags:       tricky,
		Enrichment: &feedbackv1.Enrichment{Labels: []string{"", "a,b"}},
	}}
}

// tricky tags: what a text[] literal has to quote or escape.
var tricky = []string{"vip", `quote"d`, `back\slash`, "a,b", "{braces}", " spaced ", "NULL", "", "é✓"}

func migrated(t testing.TB, schema string) (*pgxpool.Pool, *Writer) {
	t.Helper()
	p := pool(t)
	if err := Migrate(context.Background(), p, schema); err != nil {
		t.Fatal(err)
	}
	return p, NewWriter(p, schema)
}

func TestEachEventIsOneRowAndTheViewShowsTheLatestVersion(t *testing.T) {
	p, w := migrated(t, "wh_test")
	ctx := context.Background()
	if err := Migrate(ctx, p, "wh_test"); err != nil { // idempotent on restart
		t.Fatalf("second migrate: %v", err)
	}
	// One batch: a newer version first, a redelivery inside the batch, then a
	// redelivery in a later batch.
	if errs := w.Deliver(ctx, []*sink.Event{event("e2", "r1", 200, 9, ""), event("e1", "r1", 100, 3, ""), event("e1", "r1", 100, 3, ""), event("e3", "r2", 100, 7, "")}); errs != nil {
		t.Fatal(errs)
	}
	if errs := w.Deliver(ctx, []*sink.Event{event("e1", "r1", 100, 3, "")}); errs != nil {
		t.Fatal(errs)
	}
	var rows, latest int
	var score float64
	var tags, labels []string
	_ = p.QueryRow(ctx, `SELECT count(*) FROM wh_test.feedback_events`).Scan(&rows)
	_ = p.QueryRow(ctx, `SELECT count(*) FROM wh_test.feedback_latest`).Scan(&latest)
	_ = p.QueryRow(ctx, `SELECT score, tags, labels FROM wh_test.feedback_latest WHERE subject_id = 'r1'`).Scan(&score, &tags, &labels)
	if rows != 3 || latest != 2 || score != 9 {
		t.Fatalf("rows=%d latest=%d r1 score=%v; want 3 rows, 2 subjects, latest r1 score 9", rows, latest, score)
	}
	if !slices.Equal(tags, tricky) || !slices.Equal(labels, []string{"", "a,b"}) {
		t.Fatalf("tags = %q, labels = %q; want %q, [\"\" \"a,b\"]", tags, labels, tricky)
	}
}

func TestAReplayOverwritesItsRowInsteadOfAddingOne(t *testing.T) {
	p, w := migrated(t, "wh_replay")
	ctx := context.Background()
	_ = w.Deliver(ctx, []*sink.Event{event("e1", "r1", 100, 3, "")})
	if errs := w.Deliver(ctx, []*sink.Event{event("e1", "r1", 100, 4, "replay-1"), event("e1", "r1", 100, 5, "replay-1")}); errs != nil {
		t.Fatal(errs)
	}
	var rows int
	var score float64
	_ = p.QueryRow(ctx, `SELECT count(*), max(score) FROM wh_replay.feedback_events`).Scan(&rows, &score)
	if rows != 1 || score != 5 {
		t.Fatalf("rows=%d score=%v, want 1 row with the last replayed score 5", rows, score)
	}
}

func TestARowPostgreSQLRejectsFailsAloneAndPermanently(t *testing.T) {
	p, w := migrated(t, "wh_reject")
	ctx := context.Background()
	bad := event("e2", "r2", 100, 1, "")
	bad.Feedback.Comment = new(string)
	*bad.Feedback.Comment = "nul \x00 byte" // PostgreSQL text cannot hold NUL
	errs := w.Deliver(ctx, []*sink.Event{event("e1", "r1", 100, 3, ""), bad, event("e3", "r3", 100, 3, "")})
	if errs == nil || errs[0] != nil || errs[2] != nil || errs[1] == nil {
		t.Fatalf("results %v, want only the second to fail", errs)
	}
	if class, _, _ := sink.Classify(errs[1]); class != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT {
		t.Fatalf("class %v, want permanent: %v", class, errs[1])
	}
	var rows int
	_ = p.QueryRow(ctx, `SELECT count(*) FROM wh_reject.feedback_events`).Scan(&rows)
	if rows != 2 {
		t.Fatalf("rows = %d, want the two good ones", rows)
	}
}

func TestAnUnreachableDatabaseIsRetryable(t *testing.T) {
	p, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	errs := NewWriter(p, "x").Deliver(context.Background(), []*sink.Event{event("e1", "r1", 1, 1, "")})
	if errs == nil {
		t.Fatal("delivered to nowhere")
	}
	if class, _, _ := sink.Classify(errs[0]); class != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE {
		t.Fatalf("class %v: %v", class, errs[0])
	}
}

// BenchmarkDeliver500 writes batches of 500 new events (one statement each).
func BenchmarkDeliver500(b *testing.B) {
	_, w := migrated(b, "wh_bench")
	batch := make([]*sink.Event, 500)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		for i := range batch {
			n++
			batch[i] = event(fmt.Sprint("b", n), fmt.Sprint("s", n), int64(n), 9, "")
		}
		if errs := w.Deliver(context.Background(), batch); errs != nil {
			b.Fatal(errs)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "rows/s")
}

func response(id, subject string, score float64, segment feedbackv1.Segment, at time.Time, test bool) *sink.Event {
	return &sink.Event{Ctx: context.Background(), Feedback: &feedbackv1.FeedbackEvent{
		EventId: id, Source: "dl", Provider: "delighted", Kind: feedbackv1.Kind_KIND_RESPONSE_CREATED, Test: test,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: subject},
		Version: timestamppb.New(at), OccurredAt: timestamppb.New(at), ReceivedAt: timestamppb.New(at),
		Survey: &feedbackv1.Survey{Type: feedbackv1.SurveyType_SURVEY_TYPE_NPS},
		Score:  &feedbackv1.Score{Value: score, Min: 0, Max: 10}, Segment: segment,
		Respondent: &feedbackv1.Respondent{Email: subject + "@example.com"},
	}}
}

func followUp(id, system, ticket, key string, stage feedbackv1.FollowUpStage, at, created time.Time) *sink.Event {
	fu := &feedbackv1.FollowUp{System: system, TicketId: ticket, ResponseKey: key, Stage: stage, Status: stage.String()}
	if !created.IsZero() {
		fu.TicketCreatedAt = timestamppb.New(created)
	}
	return &sink.Event{Ctx: context.Background(), Feedback: &feedbackv1.FeedbackEvent{
		EventId: id, Source: system + "-tickets", Provider: system, Kind: feedbackv1.Kind_KIND_FOLLOW_UP,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_TICKET, Id: ticket},
		Version: timestamppb.New(at), OccurredAt: timestamppb.New(at), ReceivedAt: timestamppb.New(at.Add(time.Second)),
		FollowUp: fu,
	}}
}

// The loop_closure view joins the helpdesks' follow-ups to the detractors
// they were opened for, and the summary counts and takes medians over the
// window: passives, test events and older detractors are left out, a
// detractor without a ticket counts as one without.
func TestTheLoopClosureViewFollowsEachDetractorToItsSolvedTicket(t *testing.T) {
	p, w := migrated(t, "wh_loop")
	ctx := context.Background()
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	const (
		detractor = feedbackv1.Segment_SEGMENT_DETRACTOR
		created   = feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_CREATED
		replied   = feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_AGENT_REPLIED
		solved    = feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_SOLVED
		updated   = feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_UPDATED
	)
	events := []*sink.Event{
		response("r1v1", "r1", 3, detractor, t0, false),
		response("r1v2", "r1", 4, detractor, t0.Add(30*time.Minute), false), // a later version: the first arrival counts
		response("r2", "r2", 2, detractor, t0.Add(time.Minute), false),
		response("r3", "r3", 5, detractor, t0.Add(2*time.Minute), false),
		response("r4", "r4", 8, feedbackv1.Segment_SEGMENT_PASSIVE, t0, false),
		response("r5", "r5", 0, detractor, t0, true),
		response("old", "old", 1, detractor, t0.Add(-48*time.Hour), false),
		// r1: Zendesk ticket 10, created after 1 min, replied at 5, solved at 20.
		followUp("z1", "zendesk", "10", "dl/response/r1", created, t0.Add(time.Minute), t0.Add(time.Minute)),
		followUp("z2", "zendesk", "10", "dl/response/r1", updated, t0.Add(3*time.Minute), t0.Add(time.Minute)),
		followUp("z3", "zendesk", "10", "dl/response/r1", replied, t0.Add(5*time.Minute), t0.Add(time.Minute)),
		followUp("z4", "zendesk", "10", "dl/response/r1", solved, t0.Add(20*time.Minute), t0.Add(time.Minute)),
		// r3: Freshdesk ticket 7 (no created event; its time from ticket_created_at), solved after 62 min.
		followUp("f1", "freshdesk", "7", "dl/response/r3", solved, t0.Add(64*time.Minute), t0.Add(4*time.Minute)),
		// A ticket closedloop did not open.
		followUp("z9", "zendesk", "99", "", solved, t0, time.Time{}),
	}
	if errs := w.Deliver(ctx, events); errs != nil {
		t.Fatal(errs)
	}
	var n int
	var toSolved time.Duration
	var stage string
	if err := p.QueryRow(ctx, `SELECT count(*) FROM wh_loop.loop_closure`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("loop_closure rows = %d (%v), want 4: r1, r2, r3 and the 48 h old one", n, err)
	}
	if err := p.QueryRow(ctx, `SELECT time_to_solved, ticket_stage FROM wh_loop.loop_closure WHERE response_id = 'r1'`).Scan(&toSolved, &stage); err != nil {
		t.Fatal(err)
	}
	if toSolved != 20*time.Minute || stage != "solved" {
		t.Fatalf("r1: time_to_solved %v, stage %q; want 20m, solved", toSolved, stage)
	}
	s, err := LoopSummary(ctx, p, "wh_loop", time.Now().Add(-LoopWindow))
	if err != nil {
		t.Fatal(err)
	}
	if s.Detractors != 3 || s.Ticketed != 2 || s.Replied != 1 || s.Solved != 2 {
		t.Fatalf("summary %v: want 3 detractors, 2 with a ticket, 1 replied, 2 solved", s)
	}
	// Medians: to ticket (1 min, 2 min) → 90 s; to solved (20 min, 62 min) → 41 min.
	if s.MedianToTicketSeconds != 90 || s.MedianToReplySeconds != 300 || s.MedianToSolvedSeconds != 41*60 {
		t.Fatalf("medians %v / %v / %v s, want 90 / 300 / 2460", s.MedianToTicketSeconds, s.MedianToReplySeconds, s.MedianToSolvedSeconds)
	}
	if len(s.Systems) != 2 || s.Systems[0].System != "freshdesk" || s.Systems[0].MedianToSolvedSeconds != 62*60 || s.Systems[1].Solved != 1 {
		t.Fatalf("per helpdesk: %v", s.Systems)
	}
}

// The event and raw_payload columns are compressed with lz4 (migrations 14
// and 16): pglz cost PostgreSQL half again as much CPU per row.
func TestALargeEventIsStoredCompressedWithLZ4(t *testing.T) {
	p, w := migrated(t, "lz")
	e := event("big", "s-big", 1, 9, "")
	e.Feedback.RawPayload = []byte(strings.Repeat(`{"comment":"Sehr zufrieden mit dem Support, schnelle Antworten."}`, 60))
	long := strings.Repeat("Die Antworten kamen schnell, aber der Export bricht immer noch ab. ", 60)
	e.Feedback.Comment = &long
	if errs := w.Deliver(context.Background(), []*sink.Event{e}); errs != nil {
		t.Fatal(errs)
	}
	var event, raw string
	if err := p.QueryRow(context.Background(), `SELECT coalesce(pg_column_compression(event), 'none'), coalesce(pg_column_compression(raw_payload), 'none')
		FROM lz.feedback_events WHERE event_id = 'big'`).Scan(&event, &raw); err != nil {
		t.Fatal(err)
	}
	if event != "lz4" || raw != "lz4" {
		t.Fatalf("the event is stored with compression %s and the raw payload with %s, want lz4", event, raw)
	}
}

// The provider's body is the raw_payload column, byte for byte (NULL
// without one); the event document is the event without it, every other
// field included.
func TestTheRawPayloadIsItsOwnColumnAndNotInTheDocument(t *testing.T) {
	p, w := migrated(t, "wh_raw")
	ctx := context.Background()
	with, without := event("with", "r1", 1, 9, ""), event("without", "r2", 1, 9, "")
	body := []byte("{\"id\":\"r1\",\"comment\":\"caf\xc3\xa9 \x00 \xff\"}") // not even UTF-8: bytes, not text
	with.Feedback.RawPayload = body
	if errs := w.Deliver(ctx, []*sink.Event{with, without}); errs != nil {
		t.Fatal(errs)
	}
	for _, c := range []struct {
		e    *sink.Event
		want []byte
	}{{with, body}, {without, nil}} {
		var raw []byte
		var doc string
		if err := p.QueryRow(ctx, `SELECT raw_payload, event::text FROM wh_raw.feedback_events WHERE event_id = $1`, c.e.Feedback.EventId).Scan(&raw, &doc); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, c.want) || (raw == nil) != (c.want == nil) {
			t.Fatalf("%s: raw_payload %q, want %q", c.e.Feedback.EventId, raw, c.want)
		}
		if strings.Contains(doc, "raw_payload") {
			t.Fatalf("%s: the document has the raw payload: %s", c.e.Feedback.EventId, doc)
		}
		if !strings.Contains(doc, `"respondent": {"email": "a@example.com"}`) {
			t.Fatalf("%s: the document lost fields: %s", c.e.Feedback.EventId, doc)
		}
	}
	if with.Feedback.RawPayload == nil {
		t.Fatal("writing the document changed the event")
	}
}

// document is pbjson's encoding of the event without raw_payload, for
// events filled at random until every field of the contract was set in one:
// a field added to the contract that document's copy does not list fails
// here.
func TestTheDocumentIsTheEventWithoutItsRawPayload(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	fields := (&feedbackv1.FeedbackEvent{}).ProtoReflect().Descriptor().Fields()
	set := map[protoreflect.Name]bool{}
	for range 50 {
		ev := &feedbackv1.FeedbackEvent{}
		pbjsontest.Fill(r, ev.ProtoReflect(), 3)
		if len(ev.RawPayload) == 0 {
			ev.RawPayload = []byte(`{"id":"1"}`)
		}
		for i := range fields.Len() {
			if ev.ProtoReflect().Has(fields.Get(i)) {
				set[fields.Get(i).Name()] = true
			}
		}
		got, err := document(ev)
		if err != nil {
			t.Fatal(err)
		}
		// The event itself without the body (proto.Clone would drop a −0).
		raw := ev.RawPayload
		ev.RawPayload = nil
		wantJS, err := pbjson.Marshal(ev)
		ev.RawPayload = raw
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, wantJS) {
			t.Fatalf("document\n%s\nwant\n%s", got, wantJS)
		}
		if full, _ := pbjson.Marshal(ev); bytes.Equal(got, full) {
			t.Fatal("the document kept the raw payload")
		}
	}
	for i := range fields.Len() {
		if !set[fields.Get(i).Name()] {
			t.Errorf("no filled event had %s set: the test cannot tell whether document copies it", fields.Get(i).Name())
		}
	}
}

// The batch statement stores every column as the single-row statement does:
// values, NULLs, arrays and the JSON document (the batch's array parameters
// are encoded by the writer's own types, the single row's by pgx).
func TestABatchStoresEveryColumnAsASingleRowInsertDoes(t *testing.T) {
	p, w := migrated(t, "wh_cols")
	ctx := context.Background()
	full := event("full", "r1", 100, 9, "")
	full.Feedback.FollowUp = &feedbackv1.FollowUp{ResponseKey: "dl/response/r0", System: "zendesk", TicketId: "42",
		Stage: feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_CREATED, TicketCreatedAt: timestamppb.New(time.Unix(150, 0))}
	full.Feedback.Enrichment.Lane = feedbackv1.Lane_LANE_PRIORITY
	full.Feedback.RawPayload = []byte(`{"id":"r1","score":9}`)
	full.Feedback.Respondent = &feedbackv1.Respondent{Id: "u1", Email: "a@example.com", Name: `Ann "A" O'Neil`}
	sparse := &sink.Event{Ctx: context.Background(), Feedback: &feedbackv1.FeedbackEvent{
		EventId: "sparse", Source: "dl", Provider: "delighted", Kind: feedbackv1.Kind_KIND_RESPONSE_CREATED,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r2"}, ReceivedAt: timestamppb.Now()}}
	if errs := w.Deliver(ctx, []*sink.Event{full, sparse}); errs != nil {
		t.Fatal(errs)
	}
	// The same events, one statement each.
	for _, e := range []*sink.Event{full, sparse} {
		js, err := document(e.Feedback)
		if err != nil {
			t.Fatal(err)
		}
		r := row(e.Feedback, js, trace.SpanContextFromContext(e.Ctx).TraceID().String())
		r[2] = "single-" + e.Feedback.EventId
		if _, err := p.Exec(ctx, w.insert, r...); err != nil {
			t.Fatal(err)
		}
	}
	var cols []string
	for _, c := range columns {
		if c.name != "event_id" && c.name != "_cl_received_at" && c.name != "_cl_sequence" {
			cols = append(cols, "coalesce("+c.name+"::text, '<null>')")
		}
	}
	get := func(id string) []string {
		vals := make([]string, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := p.QueryRow(ctx, `SELECT `+strings.Join(cols, ", ")+` FROM wh_cols.feedback_events WHERE event_id = $1`, id).Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		return vals
	}
	for _, id := range []string{"full", "sparse"} {
		batch, single := get(id), get("single-"+id)
		if !slices.Equal(batch, single) {
			t.Fatalf("%s: the batch stored\n%q\nthe single insert\n%q", id, batch, single)
		}
	}
	nulls := func(v []string) int {
		return len(slices.DeleteFunc(slices.Clone(v), func(s string) bool { return s != "<null>" }))
	}
	if f, s := nulls(get("full")), nulls(get("sparse")); f > 2 || s < 10 {
		t.Fatalf("%d NULL columns in the full event (want at most replay_id and trace_id), %d in the sparse one", f, s)
	}
}
