package normalize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

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

func (r *recorder) ProduceEach(_ context.Context, recs ...kafkaio.Record) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		errs := make([]error, len(recs))
		for i := range errs {
			errs[i] = r.fail
		}
		return errs
	}
	r.recs = append(r.recs, recs...)
	return nil
}

// handle runs one record through HandleBatch (a batch of one).
func (h *Handler) handle(ctx context.Context, m kafka.Message) error {
	if errs := h.HandleBatch(ctx, []kafkaio.Delivery{{Ctx: ctx, Msg: m}}); errs != nil {
		return errs[0]
	}
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
		if err := h.handle(ctx, m); err != nil {
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
	if err := h.handle(context.Background(), m); err == nil {
		t.Fatal("a failed produce returned nil: the offset would be committed and the event lost")
	}
	rec.fail = nil
	if err := h.handle(context.Background(), m); err != nil {
		t.Fatalf("retry after the broker came back: %v", err)
	}
	if len(rec.recs) != 1 {
		t.Fatalf("produced %d, want 1", len(rec.recs))
	}
}

func TestWhenRedisIsDownTheRecordFailsAndIsNotSkipped(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	rec := &recorder{}
	err := handler(t, rdb, rec).handle(context.Background(), rawMsg(t, "e1", response("e1", "100")))
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
	err := handler(t, rdb, &recorder{}).handle(context.Background(), kafka.Message{Value: []byte{0xff, 0x01}})
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
		if err := h.handle(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.ids) != 1 || d.ids[0] != "e1" {
		t.Fatalf("observed %v, want the first delivery only", d.ids)
	}
}

func deliveries(ms ...kafka.Message) []kafkaio.Delivery {
	out := make([]kafkaio.Delivery, len(ms))
	for i, m := range ms {
		out[i] = kafkaio.Delivery{Ctx: context.Background(), Msg: m}
	}
	return out
}

func TestABatchDedupesWithinItselfAndAgainstRedis(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	rec := &recorder{}
	h := handler(t, rdb, rec)
	ctx := context.Background()
	if errs := h.HandleBatch(ctx, deliveries(rawMsg(t, "e0", response("e0", "50")))); errs != nil {
		t.Fatal(errs)
	}
	errs := h.HandleBatch(ctx, deliveries(
		rawMsg(t, "e0", response("e0", "50")),  // done in an earlier batch
		rawMsg(t, "e1", response("e1", "100")), // new
		rawMsg(t, "e1", response("e1", "100")), // same batch, same event id
		rawMsg(t, "e2", response("e2", "100")), // same batch, same subject version
		kafka.Message{Value: []byte{0xff}},     // poison in the middle
		rawMsg(t, "e3", response("e3", "200")), // new
	))
	if len(errs) != 6 || errs[0] != nil || errs[1] != nil || errs[2] != nil || errs[3] != nil || errs[5] != nil {
		t.Fatalf("results %v", errs)
	}
	if reason, ok := kafkaio.IsPermanent(errs[4]); !ok || reason != "undecodable_record" {
		t.Fatalf("poison record: %v", errs[4])
	}
	var ids []string
	for _, r := range rec.recs {
		var ev feedbackv1.FeedbackEvent
		_ = proto.Unmarshal(r.Value, &ev)
		ids = append(ids, ev.EventId)
	}
	if len(ids) != 3 || ids[0] != "e0" || ids[1] != "e1" || ids[2] != "e3" {
		t.Fatalf("produced %v, want [e0 e1 e3]", ids)
	}
}

type partialProducer struct {
	recorder
	failKey string
}

func (p *partialProducer) ProduceEach(ctx context.Context, recs ...kafkaio.Record) []error {
	var errs []error
	for i, r := range recs {
		if string(r.Key) == p.failKey {
			if errs == nil {
				errs = make([]error, len(recs))
			}
			errs[i] = errors.New("partition leader unavailable")
			continue
		}
		p.recorder.ProduceEach(ctx, r)
	}
	return errs
}

func TestAPartlyFailedProduceRetriesOnlyWhatWasNotWritten(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	p := &partialProducer{failKey: "dl/SUBJECT_TYPE_RESPONSE/5435"}
	h := handler(t, rdb, p)
	other := `{"event_type":"survey_response.updated","event_id":"e2","event_data":{"id":"77","survey_type":"nps","score":10,"updated_at":100}}`
	batch := deliveries(rawMsg(t, "e1", response("e1", "100")), rawMsg(t, "e2", other))
	errs := h.HandleBatch(context.Background(), batch)
	if errs == nil || errs[0] == nil || errs[1] != nil {
		t.Fatalf("results %v, want the first failed (retryable) and the second done", errs)
	}
	if _, perm := kafkaio.IsPermanent(errs[0]); perm {
		t.Fatal("a failed produce was treated as a bad record")
	}
	p.failKey = ""
	// The consumer retries from the first failed record: the batch again.
	if errs := h.HandleBatch(context.Background(), batch); errs != nil {
		t.Fatalf("retry: %v", errs)
	}
	if len(p.recs) != 2 {
		t.Fatalf("produced %d records, want 2 (each once)", len(p.recs))
	}
}

type discard struct{}

func (discard) ProduceEach(context.Context, ...kafkaio.Record) []error { return nil }

// BenchmarkHandleBatch is the handler's own cost per event (decode, map,
// claim and complete in a real redis-server, encode), in batches of 250 new
// events, without Kafka. One op is a batch of 250: divide B/op and
// allocs/op by 250 for the per-event allocation. ns/event is wall time and
// includes the two Redis round trips, during which a real normalizer runs
// other partitions' batches.
func BenchmarkHandleBatch(b *testing.B) {
	srv, err := localinfra.StartRedis(context.Background(), b.TempDir())
	if err != nil {
		b.Skip("redis-server:", err)
	}
	defer srv.Stop()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	h := New(Options{
		Dedupe:   idempotency.New(rdb, idempotency.Options{Owner: "bench"}),
		Producer: discard{}, NormalizedTopic: "norm", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		TTL: func(string) time.Duration { return time.Hour },
	})
	const size = 250
	batch := make([]kafkaio.Delivery, size)
	seq := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for i := range batch {
			seq++
			id := "e" + strconv.Itoa(seq)
			v, _ := proto.Marshal(&feedbackv1.RawWebhook{EventId: id, Source: "dl", Provider: "delighted", Body: []byte(
				`{"event_type":"survey_response.updated","event_id":"` + id + `","event_data":{"id":"` + strconv.Itoa(seq) + `","person":{"id":"5975","email":"anna@example.de","name":"Anna Müller"},"survey_type":"nps","score":9,"comment":"Schnell und zuverlässig — danke!","permalink":"https://app.delighted.com/r/5435abc","created_at":1763780000,"updated_at":1763780095,"person_properties":{"plan":"enterprise","account":{"id":"acct_42","region":"eu-central"},"seats":120},"tags":[],"additional_answers":[]}}`)})
			batch[i] = kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Topic: "raw", Value: v}}
		}
		b.StartTimer()
		if errs := h.HandleBatch(context.Background(), batch); errs != nil {
			b.Fatal(errs)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/event")
}

// Finding 1 of the hardening review: a signed body of 600 kB made a
// normalized event (the mapped comment plus a second full copy of the body)
// over the topic's limit, and the partition retried it forever.
func TestALargeBodyIsReferencedNotCopiedSoTheEventFitsItsTopic(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	rec := &recorder{}
	h := handler(t, rdb, rec)
	comment := strings.Repeat("slow support ", 600_000/13)
	body := `{"event_type":"survey_response.created","event_id":"big1","event_data":{"id":"77","survey_type":"nps","score":2,"comment":"` + comment + `","updated_at":100}}`
	m := rawMsg(t, "big1", body)
	m.Partition, m.Offset = 2, 41
	if err := h.handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var ev feedbackv1.FeedbackEvent
	if err := proto.Unmarshal(rec.recs[0].Value, &ev); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	if len(ev.RawPayload) != 0 || ev.RawRef.GetTopic() != "raw" || ev.RawRef.GetPartition() != 2 || ev.RawRef.GetOffset() != 41 ||
		ev.RawRef.GetSize() != int64(len(body)) || ev.RawRef.GetSha256() != hex.EncodeToString(sum[:]) {
		t.Fatalf("raw_payload %d bytes, raw_ref %v", len(ev.RawPayload), ev.RawRef)
	}
	if ev.GetComment() != comment {
		t.Fatal("the comment was not kept whole")
	}
	if n := len(rec.recs[0].Value); n > len(body)+1024 {
		t.Fatalf("the event is %d bytes for a %d-byte body: it must not carry the body twice", n, len(body))
	}
	// A small body is still copied.
	if err := h.handle(context.Background(), rawMsg(t, "small1", response("small1", "100"))); err != nil {
		t.Fatal(err)
	}
	var small feedbackv1.FeedbackEvent
	_ = proto.Unmarshal(rec.recs[1].Value, &small)
	if len(small.RawPayload) == 0 || small.RawRef != nil {
		t.Fatalf("small body: raw_payload %d bytes, raw_ref %v", len(small.RawPayload), small.RawRef)
	}
}

func TestAnEventTooLargeForItsTopicIsQuarantinedNotRetried(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	rec := &recorder{fail: kafkaio.Permanent(kafkaio.ReasonRecordTooLarge, &kafkaio.RecordTooLargeError{Topic: "norm", Size: 2 << 20, Limit: 1 << 20})}
	h := handler(t, rdb, rec)
	err := h.handle(context.Background(), rawMsg(t, "e9", response("e9", "100")))
	if reason, ok := kafkaio.IsPermanent(err); !ok || reason != kafkaio.ReasonRecordTooLarge {
		t.Fatalf("err = %v; want Permanent(%s) so the consumer quarantines it and moves on", err, kafkaio.ReasonRecordTooLarge)
	}
}

// Two events of one ticket at one time (a comment and the status change of
// one update) are two facts: only a response's versions share a subject key.
func TestFollowUpsOfOneTicketAtOneTimeAreNotDuplicates(t *testing.T) {
	at := time.Unix(1763800000, 0)
	ticket := &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_TICKET, Id: "35436"}
	a := &feedbackv1.FeedbackEvent{EventId: "a", Kind: feedbackv1.Kind_KIND_FOLLOW_UP, Subject: ticket, Version: timestamppb.New(at)}
	b := &feedbackv1.FeedbackEvent{EventId: "b", Kind: feedbackv1.Kind_KIND_FOLLOW_UP, Subject: ticket, Version: timestamppb.New(at)}
	for _, ka := range Keys(a) {
		for _, kb := range Keys(b) {
			if ka == kb {
				t.Fatalf("follow-ups a and b share the dedupe key %s", ka)
			}
		}
	}
	r := &feedbackv1.FeedbackEvent{EventId: "r", Kind: feedbackv1.Kind_KIND_RESPONSE_UPDATED, Version: timestamppb.New(at),
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "1"}}
	if len(Keys(r)) != 2 {
		t.Fatalf("a response version has keys %v, want its event id and its subject version", Keys(r))
	}
}
