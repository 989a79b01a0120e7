package warehouse

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

func pool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pg := localinfra.PostgresForTest(t)
	p, err := pgxpool.New(context.Background(), pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func msg(t *testing.T, id, subject string, version int64, score float64, replay string) kafka.Message {
	t.Helper()
	comment := "ok"
	b, err := proto.Marshal(&feedbackv1.FeedbackEvent{
		EventId: id, Source: "dl", Provider: "delighted", Kind: feedbackv1.Kind_KIND_RESPONSE_UPDATED,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: subject},
		Version: timestamppb.New(time.Unix(version, 0)), OccurredAt: timestamppb.New(time.Unix(version, 0)),
		ReceivedAt: timestamppb.Now(), Survey: &feedbackv1.Survey{Type: feedbackv1.SurveyType_SURVEY_TYPE_NPS},
		Score: &feedbackv1.Score{Value: score, Min: 0, Max: 10}, Segment: feedbackv1.Segment_SEGMENT_PROMOTER,
		Comment: &comment, Respondent: &feedbackv1.Respondent{Email: "a@example.com"}, ReplayId: replay,
	})
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Value: b}
}

func TestEachEventIsOneRowAndTheViewShowsTheLatestVersion(t *testing.T) {
	p := pool(t)
	ctx := context.Background()
	if err := Migrate(ctx, p, "wh_test"); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, p, "wh_test"); err != nil { // idempotent on restart
		t.Fatalf("second migrate: %v", err)
	}
	w := NewWriter(p, "wh_test")
	for _, m := range []kafka.Message{
		msg(t, "e2", "r1", 200, 9, ""), // newer version arrives first
		msg(t, "e1", "r1", 100, 3, ""),
		msg(t, "e1", "r1", 100, 3, ""), // redelivery
		msg(t, "e3", "r2", 100, 7, ""),
	} {
		if err := w.Handle(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var rows, latest int
	var score float64
	_ = p.QueryRow(ctx, `SELECT count(*) FROM wh_test.feedback_events`).Scan(&rows)
	_ = p.QueryRow(ctx, `SELECT count(*) FROM wh_test.feedback_latest`).Scan(&latest)
	_ = p.QueryRow(ctx, `SELECT score FROM wh_test.feedback_latest WHERE subject_id = 'r1'`).Scan(&score)
	if rows != 3 || latest != 2 || score != 9 {
		t.Fatalf("rows=%d latest=%d r1 score=%v; want 3 rows, 2 subjects, latest r1 score 9", rows, latest, score)
	}
}

func TestAReplayOverwritesItsRowInsteadOfAddingOne(t *testing.T) {
	p := pool(t)
	ctx := context.Background()
	if err := Migrate(ctx, p, "wh_replay"); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(p, "wh_replay")
	_ = w.Handle(ctx, msg(t, "e1", "r1", 100, 3, ""))
	if err := w.Handle(ctx, msg(t, "e1", "r1", 100, 4, "replay-1")); err != nil {
		t.Fatal(err)
	}
	var rows int
	var score float64
	_ = p.QueryRow(ctx, `SELECT count(*), max(score) FROM wh_replay.feedback_events`).Scan(&rows, &score)
	if rows != 1 || score != 4 {
		t.Fatalf("rows=%d score=%v, want 1 row with the replayed score 4", rows, score)
	}
}

func TestAnUndecodableRecordIsQuarantined(t *testing.T) {
	w := &Writer{}
	err := w.Handle(context.Background(), kafka.Message{Value: []byte{0xff}})
	if _, ok := kafkaio.IsPermanent(err); !ok {
		t.Fatalf("err = %v", err)
	}
}
