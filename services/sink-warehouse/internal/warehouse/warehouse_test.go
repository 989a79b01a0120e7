package warehouse

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/localinfra"
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
		Tags: []string{"vip", `quote"d`},
	}}
}

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
	var tags []string
	_ = p.QueryRow(ctx, `SELECT count(*) FROM wh_test.feedback_events`).Scan(&rows)
	_ = p.QueryRow(ctx, `SELECT count(*) FROM wh_test.feedback_latest`).Scan(&latest)
	_ = p.QueryRow(ctx, `SELECT score, tags FROM wh_test.feedback_latest WHERE subject_id = 'r1'`).Scan(&score, &tags)
	if rows != 3 || latest != 2 || score != 9 {
		t.Fatalf("rows=%d latest=%d r1 score=%v; want 3 rows, 2 subjects, latest r1 score 9", rows, latest, score)
	}
	if strings.Join(tags, "|") != `vip|quote"d` {
		t.Fatalf("tags = %q", tags)
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
