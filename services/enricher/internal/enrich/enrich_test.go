package enrich

import (
	"context"
	"testing"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

type recorder struct{ recs []kafkaio.Record }

func (r *recorder) Produce(_ context.Context, recs ...kafkaio.Record) error {
	r.recs = append(r.recs, recs...)
	return nil
}

func TestEventsAreForwardedWithTheirKeyAndBytes(t *testing.T) {
	b, _ := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: "e1", Subject: &feedbackv1.Subject{Id: "5435"}})
	rec := &recorder{}
	h := &Handler{Producer: rec, EnrichedTopic: "enriched"}
	if err := h.Handle(context.Background(), kafka.Message{Key: []byte("k"), Value: b}); err != nil {
		t.Fatal(err)
	}
	if len(rec.recs) != 1 || rec.recs[0].Topic != "enriched" || string(rec.recs[0].Key) != "k" || string(rec.recs[0].Value) != string(b) {
		t.Fatalf("records = %+v", rec.recs)
	}
}

func TestEventsWithoutIdsAreQuarantined(t *testing.T) {
	b, _ := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: "e1"})
	err := (&Handler{Producer: &recorder{}, EnrichedTopic: "x"}).Handle(context.Background(), kafka.Message{Value: b})
	if reason, ok := kafkaio.IsPermanent(err); !ok || reason != "missing_required_id" {
		t.Fatalf("err = %v", err)
	}
}
