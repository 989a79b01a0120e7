package normalize

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/idempotency"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/providers"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// FuzzTheBatchHandler runs whole batches through the normalizer's handler —
// decode, map for every provider, in-batch repeats, Redis dedupe, produce —
// from arbitrary bytes: up to eight records split at 0xFF, each a RawWebhook
// of the provider its first byte picks (or, with its second byte odd, the
// bytes as a raw record value). It must never panic, answer one result per
// record, never ask to retry a record while Redis and Kafka are up (each
// record is done, a duplicate, or quarantined with a reason), produce only
// events of the batch, and never copy a body over the inline limit.
func FuzzTheBatchHandler(f *testing.F) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(f)})
	rec := &recorder{}
	h := New(Options{
		Dedupe:   idempotency.New(rdb, idempotency.Options{Prefix: "fuzz:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":", Owner: "w"}),
		Producer: rec, NormalizedTopic: "norm", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), RawInlineMax: 1024,
		TTL: func(string) time.Duration { return time.Hour },
	})
	names := providers.Names()         // every provider of the table
	pick := func(name string) string { // a record's first byte picks its provider
		for i, n := range names {
			if n == name {
				return string([]byte{byte(i)})
			}
		}
		f.Fatalf("no provider %s", name)
		return ""
	}
	dl, tf := pick("delighted"), pick("typeform")
	f.Add([]byte(dl + "\x00" + response("e1", "100") + "\xff" + dl + "\x00" + response("e1", "100") + "\xff" + dl + "\x00" + response("e2", "101")))
	f.Add([]byte(tf + "\x00{\"event_id\":\"t\",\"event_type\":\"form_response\",\"form_response\":{\"token\":\"x\"}}\xff\x00\x01garbage"))
	f.Add([]byte(dl + "\x00{\"event_type\":\"survey_response.created\",\"event_id\":\"big\",\"event_data\":{\"id\":\"9\",\"score\":1,\"updated_at\":5,\"comment\":\"" +
		string(bytes.Repeat([]byte("z"), 2000)) + "\"}}"))
	seq := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		parts := bytes.Split(data, []byte{0xff})
		if len(parts) > 8 {
			parts = parts[:8]
		}
		seq++
		batch := make([]kafkaio.Delivery, 0, len(parts))
		ids := map[string]bool{}
		for i, p := range parts {
			var value []byte
			if len(p) >= 2 && p[1]%2 == 1 {
				value = p[2:]
			} else {
				prov, body := "delighted", p
				if len(p) >= 2 {
					prov, body = names[int(p[0])%len(names)], p[2:]
				}
				// Ids repeat within a batch (redeliveries) but not across runs.
				id := "f" + strconv.Itoa(seq) + "-" + strconv.Itoa(i%3)
				ids[id] = true
				value, _ = proto.Marshal(&feedbackv1.RawWebhook{EventId: id, Source: "src", Provider: prov, EventType: "x", Body: body})
			}
			batch = append(batch, kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Topic: "raw", Partition: 0, Offset: int64(i), Value: value}})
		}
		rec.mu.Lock()
		before := len(rec.recs)
		rec.mu.Unlock()
		results := h.HandleBatch(context.Background(), batch)
		if results != nil && len(results) != len(batch) {
			t.Fatalf("%d results for %d records", len(results), len(batch))
		}
		for i, err := range results {
			if _, ok := kafkaio.IsPermanent(err); err != nil && !ok {
				t.Fatalf("record %d: retryable %v with Redis and Kafka up: the partition would wait forever", i, err)
			}
		}
		rec.mu.Lock()
		out := rec.recs[before:]
		rec.mu.Unlock()
		for _, r := range out {
			var ev feedbackv1.FeedbackEvent
			if err := proto.Unmarshal(r.Value, &ev); err != nil {
				t.Fatalf("produced an undecodable event: %v", err)
			}
			if !ids[ev.EventId] {
				t.Fatalf("produced event %q, not of this batch", ev.EventId)
			}
			if len(ev.RawPayload) > 1024 || (len(ev.RawPayload) == 0 && ev.RawRef == nil) {
				t.Fatalf("raw_payload of %d bytes, raw_ref %v", len(ev.RawPayload), ev.RawRef)
			}
		}
	})
}
