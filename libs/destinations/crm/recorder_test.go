package crm

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

type failingProducer struct{ fail bool }

func (p *failingProducer) Produce(context.Context, ...kafkaio.Record) error {
	if p.fail {
		return context.DeadlineExceeded
	}
	return nil
}

// An unsubscribe is pending from its first delivery and overdue past the
// deadline; an outcome that could not be written to Kafka is retried and
// recorded the same (not applied again); once recorded it is no longer
// pending.
func TestPendingUnsubscribesTurnOverdueAndLeaveWhenRecorded(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	ctx := context.Background()
	now := time.Now()
	prod := &failingProducer{fail: true}
	r := &Recorder{RDB: rdb, Prefix: "t:" + t.Name() + ":", Records: prod, Topic: "u", Sink: "sink-webhook", Destination: "crm", Kind: "hubspot",
		Deadline: 5 * time.Minute, Now: func() time.Time { return now }}
	ev := func(id string, received time.Time) *OptOut {
		return &OptOut{Email: id + "@example.com", Event: &sink.Event{Attempt: 1, Feedback: &feedbackv1.FeedbackEvent{EventId: id,
			Kind: feedbackv1.Kind_KIND_UNSUBSCRIBED, ReceivedAt: timestamppb.New(received)}}}
	}
	old, fresh := ev("old", now.Add(-6*time.Minute)), ev("fresh", now.Add(-time.Minute))
	if err := r.Pending(ctx, []*OptOut{old, fresh}); err != nil {
		t.Fatal(err)
	}
	if p, o, err := r.PendingCounts(ctx); err != nil || p != 2 || o != 1 {
		t.Fatalf("pending %d, overdue %d (%v): want 2 and 1", p, o, err)
	}
	applied := Outcome{Result: sinkv1.PropagationResult_PROPAGATION_RESULT_APPLIED, Detail: "contact 1"}
	if err := r.Record(ctx, old, applied); err == nil {
		t.Fatal("recorded although Kafka refused the record")
	}
	if done, _ := r.Recorded(ctx, []*OptOut{old, fresh}); !done[0] || done[1] {
		t.Fatalf("recorded %v: want the outcome kept for the retry", done)
	}
	prod.fail = false
	now = now.Add(time.Second)
	if err := r.Record(ctx, old, Outcome{}); err != nil { // the retry: the outcome it had
		t.Fatal(err)
	}
	if p, o, _ := r.PendingCounts(ctx); p != 1 || o != 0 {
		t.Fatalf("pending %d, overdue %d after recording the old one: want 1 and 0", p, o)
	}
}
