// Package normalize is the normalizer's record handler: decode the
// RawWebhook, map it, deduplicate it in Redis (two-phase) and produce the
// FeedbackEvent to the normalized topic, keyed by subject.
package normalize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/idempotency"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/telemetry"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/services/normalizer/internal/mapping"
)

// Producer is the part of kafkaio.Producer the handler needs.
type Producer interface {
	ProduceEach(ctx context.Context, recs ...kafkaio.Record) []error
}

// DriftObserver records the field paths of authentic events (package drift).
type DriftObserver interface {
	Observe(ctx context.Context, provider, eventType, eventID string, body []byte) ([]string, error)
}

// Options configure the Handler.
type Options struct {
	// Drift, when set, is told the body of every event that is processed.
	Drift           DriftObserver
	Dedupe          *idempotency.Store
	Producer        Producer
	NormalizedTopic string
	// RawInlineMax is the largest body copied into raw_payload; larger ones
	// are referenced by raw_ref (the event must fit in its topic: a body of
	// up to the raw topic's limit plus the fields mapped from it would not).
	// Default 64 KiB.
	RawInlineMax int
	// TTL returns the dedupe TTL of a source (its dedupe_ttl, default 72h).
	TTL func(source string) time.Duration
	Log *slog.Logger
	Now func() time.Time
}

// Handler handles raw-topic records.
type Handler struct {
	o      Options
	dedupe metric.Int64Counter
	fresh  *telemetry.Freshness
}

// New returns a Handler.
func New(o Options) *Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RawInlineMax <= 0 {
		o.RawInlineMax = 64 << 10
	}
	meter := otel.Meter("github.com/closedloop/closedloop/services/normalizer")
	h := &Handler{o: o, fresh: telemetry.NewFreshness(meter, "normalizer")}
	h.dedupe, _ = meter.Int64Counter("closedloop.normalizer.dedupe", metric.WithUnit("{decision}"),
		metric.WithDescription("Dedupe decisions: result=miss (new event), hit (duplicate dropped), in_progress (claimed elsewhere; retried)."))
	return h
}

// Keys returns the dedupe ids of an event (libs/idempotency.EventKeys).
func Keys(ev *feedbackv1.FeedbackEvent) []string { return idempotency.EventKeys(ev) }

// Scope is the dedupe scope of an event: its source, and its replay id when
// an operator replayed it (so a replay is processed again).
func Scope(ev *feedbackv1.FeedbackEvent) string {
	if ev.ReplayId != "" {
		return ev.Source + "/replay:" + ev.ReplayId
	}
	return ev.Source
}

// SubjectKey is the record key on the normalized topic: all versions of a
// subject land on one partition, in order.
func SubjectKey(ev *feedbackv1.FeedbackEvent) []byte {
	return []byte(ev.Source + "/" + ev.GetSubject().GetType().String() + "/" + ev.GetSubject().GetId())
}

// item is one mapped event of a batch.
type item struct {
	idx   int // in the batch
	ev    *feedbackv1.FeedbackEvent
	body  []byte
	idem  idempotency.Item
	dupOf int // index in items of an earlier event of this batch with a shared key, or -1
}

// HandleBatch implements kafkaio.BatchHandler: decode and map every record,
// claim all new events in one Redis round trip, produce them in one call,
// mark the written ones done in one round trip. A record's result is nil
// (normalized, or a duplicate), a Permanent error (quarantined by the
// consumer with its reason) or a retryable error (Redis or Kafka
// unavailable, or the event claimed by another worker).
func (h *Handler) HandleBatch(ctx context.Context, batch []kafkaio.Delivery) []error {
	results := make([]error, len(batch))
	failed := false
	fail := func(i int, err error) { results[i], failed = err, true }
	items := make([]item, 0, len(batch))
	byKey := make(map[string]int, 2*len(batch))
	now := h.o.Now()
	for i, d := range batch {
		var raw feedbackv1.RawWebhook
		if err := proto.Unmarshal(d.Msg.Value, &raw); err != nil {
			fail(i, kafkaio.Permanent(mapping.ReasonUndecodableRecord, err))
			continue
		}
		ev, err := mapping.Map(&raw, now)
		if err != nil {
			fail(i, err) // Permanent: quarantined with its reason by the consumer
			continue
		}
		if len(ev.RawPayload) > h.o.RawInlineMax {
			sum := sha256.Sum256(ev.RawPayload)
			ev.RawRef = &feedbackv1.RawRef{Topic: d.Msg.Topic, Partition: int32(d.Msg.Partition), Offset: d.Msg.Offset,
				Size: int64(len(ev.RawPayload)), Sha256: hex.EncodeToString(sum[:])}
			ev.RawPayload = nil
		}
		if span := trace.SpanFromContext(d.Ctx); span.IsRecording() {
			span.SetAttributes(attribute.String("closedloop.event_id", ev.EventId), attribute.String("closedloop.source", ev.Source))
		}
		it := item{idx: i, ev: ev, body: raw.Body, dupOf: -1,
			idem: idempotency.Item{Scope: Scope(ev), IDs: Keys(ev), TTL: h.o.TTL(ev.Source)}}
		// Two deliveries of one event in the same batch: the claim script
		// cannot tell them apart (same owner), so the batch does.
		for _, id := range it.idem.IDs {
			k := it.idem.Scope + "\x00" + id
			if j, seen := byKey[k]; seen && it.dupOf < 0 {
				it.dupOf = j
			}
		}
		if it.dupOf < 0 {
			for _, id := range it.idem.IDs {
				byKey[it.idem.Scope+"\x00"+id] = len(items)
			}
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return resultsOrNil(results, failed)
	}

	// Claim every event that is not a repeat within this batch.
	// Claims belong to the consumer worker, so that its retry re-claims
	// them (a worker may serve several partitions: CONSUMER_WORKERS).
	worker := kafkaio.WorkerOf(ctx)
	if worker == "" {
		worker = batch[0].Msg.Topic + "/" + strconv.Itoa(batch[0].Msg.Partition)
	}
	store := h.o.Dedupe.ForWorker(worker)
	claims := make([]idempotency.Item, 0, len(items))
	claimOf := make([]int, len(items)) // item -> index in claims
	for i, it := range items {
		claimOf[i] = -1
		if it.dupOf < 0 {
			claimOf[i] = len(claims)
			claims = append(claims, it.idem)
		}
	}
	outcomes, err := store.ClaimAll(ctx, claims)
	if err != nil {
		// Redis is down: fail the attempt; the consumer retries with backoff
		// and the partition waits. Dedupe is never skipped.
		err = fmt.Errorf("dedupe unavailable: %w", err)
		for _, it := range items {
			fail(it.idx, err)
		}
		return results
	}

	// Produce the claimed events.
	var recs []kafkaio.Record
	var produced []int // items, parallel to recs
	for i, it := range items {
		if it.dupOf >= 0 {
			continue
		}
		switch outcomes[claimOf[i]] {
		case idempotency.Duplicate:
			h.count(ctx, it.ev.Source, "hit")
		case idempotency.InProgress:
			h.count(ctx, it.ev.Source, "in_progress")
			fail(it.idx, idempotency.ErrInProgress)
		case idempotency.Claimed:
			h.count(ctx, it.ev.Source, "miss")
			// The generated encoder (vtprotobuf): a quarter of the handler's CPU
			// was proto.Marshal. It does not check that strings are UTF-8 as
			// proto.Marshal does; the raw record's strings are checked by
			// proto.Unmarshal above and the mapping's fuzz targets keep the
			// rest valid (mapping_test.go, validProto3).
			value, err := it.ev.MarshalVT()
			if err != nil {
				fail(it.idx, fmt.Errorf("encode FeedbackEvent: %w", err))
				continue
			}
			recs = append(recs, kafkaio.Record{Topic: h.o.NormalizedTopic, Key: SubjectKey(it.ev), Value: value, Context: batch[it.idx].Ctx})
			produced = append(produced, i)
		}
	}
	perrs := h.o.Producer.ProduceEach(ctx, recs...)
	var done, release []idempotency.Item
	for r, i := range produced {
		it := items[i]
		if perrs != nil && perrs[r] != nil {
			fail(it.idx, perrs[r])
			release = append(release, it.idem)
			continue
		}
		done = append(done, it.idem)
	}
	// Failed produces give their claims back so the retry need not wait for
	// the processing TTL (the retry by this worker may re-claim them anyway).
	if err := store.ReleaseAll(ctx, release); err != nil {
		h.o.Log.WarnContext(ctx, "releasing claims after a failed produce", "error", err.Error())
	}
	// The events are durable downstream. If this mark fails the claims
	// expire and a redelivery produces the events again: the documented window.
	if err := store.CompleteAll(ctx, done); err != nil {
		h.o.Log.WarnContext(ctx, "dedupe mark failed after produce; a redelivery may repeat these events", "events", len(done), "error", err.Error())
	}
	// A repeat within the batch shares the fate of its first delivery.
	for _, it := range items {
		if it.dupOf < 0 {
			continue
		}
		first := items[it.dupOf]
		if err := results[first.idx]; err != nil {
			fail(it.idx, err)
			continue
		}
		h.count(ctx, it.ev.Source, "hit")
	}
	debug := h.o.Log.Enabled(ctx, slog.LevelDebug)
	for r, i := range produced {
		if perrs != nil && perrs[r] != nil {
			continue
		}
		it := items[i]
		if rcv := it.ev.GetReceivedAt(); rcv != nil {
			h.fresh.Record(ctx, rcv.AsTime(), "")
		}
		h.observeDrift(batch[it.idx].Ctx, it)
		if debug {
			h.o.Log.DebugContext(batch[it.idx].Ctx, "event normalized", "event_id", it.ev.EventId, "kind", it.ev.Kind.String(), "subject", it.ev.GetSubject().GetId())
		}
	}
	return resultsOrNil(results, failed)
}

// maxLoggedPaths is the most new field paths one log line names.
const maxLoggedPaths = 20

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func resultsOrNil(results []error, failed bool) []error {
	if !failed {
		return nil
	}
	return results
}

func (h *Handler) count(ctx context.Context, source, result string) {
	h.dedupe.Add(ctx, 1, metric.WithAttributes(attribute.String("source", source), attribute.String("result", result)))
}

// observeDrift is observability only: a failure is logged, and the paths
// are tried again with the next event that carries them.
func (h *Handler) observeDrift(ctx context.Context, it item) {
	if h.o.Drift == nil {
		return
	}
	drifted, err := h.o.Drift.Observe(ctx, it.ev.Provider, it.ev.ProviderEventType, it.ev.EventId, it.body)
	if err != nil {
		h.o.Log.WarnContext(ctx, "schema drift not recorded", "error", err.Error())
	} else if len(drifted) > 0 {
		// Bounded: a body inventing thousands of fields gives one short line.
		shown := drifted[:min(len(drifted), maxLoggedPaths)]
		h.o.Log.InfoContext(ctx, "new fields in provider payloads", "provider", it.ev.Provider, "event_type", truncate(it.ev.ProviderEventType, 64),
			"event_id", it.ev.EventId, "new_paths", len(drifted), "paths", shown)
	}
}
