package normalize

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/idempotency"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

type recorder struct {
	mu   sync.Mutex
	recs []kafkaio.Record
	fail error
}

func (r *recorder) Produce(_ context.Context, recs ...kafkaio.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.recs = append(r.recs, recs...)
	return nil
}

func handler(t *testing.T, rdb *redis.Client, p Producer) *Handler {
	t.Helper()
	return New(Options{
		Dedupe:   idempotency.New(rdb, idempotency.Options{Prefix: t.Name() + ":", Owner: "w"}),
		Producer: p, NormalizedTopic: "norm", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		TTL: func(string) time.Duration { return time.Hour },
	})
}

func rawMsg(t *testing.T, eventID, body string) kafka.Message {
	t.Helper()
	b, err := proto.Marshal(&feedbackv1.RawWebhook{EventId: eventID, Source: "dl", Provider: "delighted", Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Topic: "raw", Value: b}
}

func response(eventID, updatedAt string) string {
	return `{"event_type":"survey_response.updated","event_id":"` + eventID + `","event_data":{"id":"5435","survey_type":"nps","score":4,"updated_at":` + updatedAt + `}}`
}

func TestDuplicatesByEventIDOrSubjectVersionProduceNothing(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	rec := &recorder{}
	h := handler(t, rdb, rec)
	ctx := context.Background()
	for _, m := range []kafka.Message{
		rawMsg(t, "e1", response("e1", "100")), // new
		rawMsg(t, "e1", response("e1", "100")), // redelivery
		rawMsg(t, "e2", response("e2", "100")), // same response version under another id (backfill)
		rawMsg(t, "e3", response("e3", "200")), // a newer version: new
	} {
		if err := h.Handle(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.recs) != 2 {
		t.Fatalf("produced %d events, want 2", len(rec.recs))
	}
	var ev feedbackv1.FeedbackEvent
	_ = proto.Unmarshal(rec.recs[0].Value, &ev)
	if ev.EventId != "e1" || string(rec.recs[0].Key) != "dl/SUBJECT_TYPE_RESPONSE/5435" || ev.Segment != feedbackv1.Segment_SEGMENT_DETRACTOR {
		t.Fatalf("first event %v key %s", &ev, rec.recs[0].Key)
	}
}

func TestAFailedProduceReleasesTheClaimSoTheRetrySucceeds(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	rec := &recorder{fail: errors.New("kafka down")}
	h := handler(t, rdb, rec)
	m := rawMsg(t, "e1", response("e1", "100"))
	if err := h.Handle(context.Background(), m); err == nil {
		t.Fatal("a failed produce returned nil: the offset would be committed and the event lost")
	}
	rec.fail = nil
	if err := h.Handle(context.Background(), m); err != nil {
		t.Fatalf("retry after the broker came back: %v", err)
	}
	if len(rec.recs) != 1 {
		t.Fatalf("produced %d, want 1", len(rec.recs))
	}
}

func TestWhenRedisIsDownTheRecordFailsAndIsNotSkipped(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	rec := &recorder{}
	err := handler(t, rdb, rec).Handle(context.Background(), rawMsg(t, "e1", response("e1", "100")))
	if err == nil {
		t.Fatal("handled without dedupe")
	}
	if _, perm := kafkaio.IsPermanent(err); perm {
		t.Fatal("a Redis outage was treated as a bad record")
	}
	if len(rec.recs) != 0 {
		t.Fatal("produced without dedupe")
	}
}

func TestAnUndecodableRecordIsQuarantined(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	err := handler(t, rdb, &recorder{}).Handle(context.Background(), kafka.Message{Value: []byte{0xff, 0x01}})
	if reason, ok := kafkaio.IsPermanent(err); !ok || reason != "undecodable_record" {
		t.Fatalf("err = %v", err)
	}
}

type driftRecorder struct{ ids []string }

func (d *driftRecorder) Observe(_ context.Context, _, _, eventID string, _ []byte) ([]string, error) {
	d.ids = append(d.ids, eventID)
	return nil, nil
}

func TestOnlyProcessedEventsAreObservedForSchemaDrift(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	d := &driftRecorder{}
	h := handler(t, rdb, &recorder{})
	h.o.Drift = d
	for _, m := range []kafka.Message{rawMsg(t, "e1", response("e1", "100")), rawMsg(t, "e1", response("e1", "100"))} {
		if err := h.Handle(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.ids) != 1 || d.ids[0] != "e1" {
		t.Fatalf("observed %v, want the first delivery only", d.ids)
	}
}
