// Package sink is the runtime every destination service shares: it turns a
// Destination (deliver a batch of FeedbackEvents somewhere) into a
// kafkaio.BatchHandler that delivers each event once in outcome.
//
// Per batch of one partition, in order:
//
//  1. decode (an undecodable record is quarantined by the consumer) and
//     filter (Config.Filter; a filtered event is done);
//  2. skip events the Checkpoint says were delivered (a redelivery after a
//     crash or rebalance has no second outcome);
//  3. deliver, retrying what failed retryably with exponential backoff and
//     full jitter (Retry-After honoured as a floor), at most MaxAttempts
//     times and for at most MaxElapsed — counted only while the breaker is
//     closed, so an outage pauses instead of exhausting budgets;
//  4. dead-letter permanent failures and exhausted events as DeadLetter
//     records (the event, the error, its class and every attempt) on the DLQ
//     topic, durably, before the batch is done;
//  5. mark the delivered events in the Checkpoint, then return: the consumer
//     commits the offsets.
//
// A Breaker shared by all partitions opens after consecutive failed
// deliveries: every worker then waits (consumption pauses, Kafka holds the
// backlog, memory stays flat, nothing floods the DLQ), one probe tests the
// destination after OpenFor, and delivery resumes by itself. Pause and
// Resume do the same by hand.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/telemetry"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Producer is the part of kafkaio.Producer the runtime needs (dead letters).
type Producer interface {
	Produce(ctx context.Context, recs ...kafkaio.Record) error
}

// Config configures a Runner. Zero values take the stated defaults.
type Config struct {
	// Sink is the service name ("sink-warehouse"); Destination names one
	// target inside it (a webhook endpoint), empty when there is one.
	Sink, Destination string
	// DLQTopic receives DeadLetter records; DLQ produces them.
	DLQTopic string
	DLQ      Producer
	// Checkpoint (default Idempotent: the destination dedupes itself).
	Checkpoint Checkpoint
	// Filter, when set, decides which events this sink delivers; the others
	// are done without a delivery. An event it cannot judge (an evaluation
	// error) is dead-lettered as permanent, never silently skipped.
	Filter Matcher
	// PriorityTopic is the priority lane: its batches get the next free
	// slot, and while it has a backlog the standard lane waits (see lanes).
	PriorityTopic string
	// Ready, when set, is waited for before each batch (a destination still
	// connecting: consumption holds as if paused).
	Ready func(ctx context.Context) error
	// Concurrency is the most batches delivered to the destination at once
	// (0: one per partition the consumer works on).
	Concurrency int
	// MaxAttempts per event (default 8) and MaxElapsed since its first
	// attempt (default 10m), both counted while the breaker is closed.
	MaxAttempts int
	MaxElapsed  time.Duration
	// BackoffBase (default 200ms) doubles per attempt up to BackoffMax (30s);
	// each wait is drawn uniformly from [0, that] (full jitter).
	BackoffBase, BackoffMax time.Duration
	// Breaker (default retry.NewBreaker(5, 10s, nil)) is shared by every partition.
	Breaker *retry.Breaker
	// RatePerSecond limits events per second to the destination (0: none).
	RatePerSecond float64
	Log           *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Runner delivers consumed events to a Destination; HandleBatch is its
// kafkaio.BatchHandler.
type Runner struct {
	cfg     Config
	dest    Destination
	limiter *rate.Limiter
	lanes   *lanes
	attrs   metric.MeasurementOption

	nDelivered, nFailed, nDead atomic.Int64
	pauseReason                atomic.Pointer[string]

	delivered metric.Int64Counter
	failed    metric.Int64Counter
	retries   metric.Int64Counter
	dead      metric.Int64Counter
	fresh     *telemetry.Freshness
	duration  metric.Float64Histogram
	tracer    trace.Tracer
}

// New returns a Runner for dest.
func New(cfg Config, dest Destination) (*Runner, error) {
	switch {
	case cfg.Sink == "":
		return nil, errors.New("sink: no sink name")
	case cfg.DLQ == nil || cfg.DLQTopic == "":
		return nil, errors.New("sink: a dead-letter producer and topic are required")
	case cfg.Log == nil:
		return nil, errors.New("sink: no logger")
	}
	if cfg.Checkpoint == nil {
		cfg.Checkpoint = Idempotent{}
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.MaxElapsed <= 0 {
		cfg.MaxElapsed = 10 * time.Minute
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 200 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Breaker == nil {
		cfg.Breaker = retry.NewBreaker(5, 10*time.Second, nil)
	}
	r := &Runner{cfg: cfg, dest: dest, lanes: newLanes(cfg.Concurrency, cfg.Now)}
	// The destination label is the destination's name ("warehouse" for the
	// warehouse sink), as freshness and the status name it.
	attrs := []attribute.KeyValue{attribute.String("sink", cfg.Sink), attribute.String("destination", r.Name())}
	r.attrs = metric.WithAttributes(attrs...)
	meter := otel.Meter("github.com/closedloop/closedloop/libs/sink")
	r.delivered, _ = meter.Int64Counter("closedloop.sink.delivered", metric.WithUnit("{event}"), metric.WithDescription("Events delivered to the destination."))
	r.failed, _ = meter.Int64Counter("closedloop.sink.failed", metric.WithUnit("{attempt}"), metric.WithDescription("Failed delivery attempts, by error class."))
	r.retries, _ = meter.Int64Counter("closedloop.sink.retries", metric.WithUnit("{round}"), metric.WithDescription("Delivery rounds retried after a backoff."))
	r.dead, _ = meter.Int64Counter("closedloop.sink.dead_lettered", metric.WithUnit("{event}"), metric.WithDescription("Events written to the dead-letter topic, by class."))
	r.fresh = telemetry.NewFreshness(meter, cfg.Sink)
	r.duration, _ = meter.Float64Histogram("closedloop.sink.delivery.duration", metric.WithUnit("s"),
		metric.WithDescription("Time the destination took to answer one delivery call (a batch or one event)."),
		metric.WithExplicitBucketBoundaries(telemetry.FastSeconds...))
	r.tracer = otel.Tracer("github.com/closedloop/closedloop/libs/sink")
	_, _ = meter.Int64ObservableGauge("closedloop.sink.breaker.state", metric.WithUnit("{state}"),
		metric.WithDescription("Circuit breaker: 0 closed, 1 open, 2 half-open; 3 paused by an operator."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			v := int64(r.cfg.Breaker.State())
			if r.cfg.Breaker.Paused() {
				v = 3
			}
			o.Observe(v, metric.WithAttributes(attrs...))
			return nil
		}))
	if cfg.RatePerSecond > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(cfg.RatePerSecond), max(1, int(cfg.RatePerSecond)))
	}
	return r, nil
}

// Name is the destination's name: Config.Destination, else the sink's
// name without its "sink-" prefix ("warehouse").
func (r *Runner) Name() string {
	if r.cfg.Destination != "" {
		return r.cfg.Destination
	}
	return strings.TrimPrefix(r.cfg.Sink, "sink-")
}

// CheckpointKey is the checkpoint key of an event: its id, scoped by its
// replay id so an operator's replay is delivered again, once per replay.
func CheckpointKey(ev *feedbackv1.FeedbackEvent) string {
	if ev.ReplayId != "" {
		return ev.EventId + "/replay:" + ev.ReplayId
	}
	return ev.EventId
}

// pending is one event in delivery.
type pending struct {
	idx      int
	ev       *Event
	attempts []*sinkv1.Attempt
	first    time.Time
	active   time.Duration // time spent retrying while the breaker was closed
}

// HandleBatch implements kafkaio.BatchHandler. A batch may hold both
// lanes' records (the host's consumer gathers topics: live traffic on both,
// fetched in one answer). It is delivered as one unless the priority lane
// has a backlog, or the lanes are holding the standard lane back for one:
// then the priority records go first and the others wait their turn.
func (r *Runner) HandleBatch(ctx context.Context, batch []kafkaio.Delivery) []error {
	prio, backlog := r.lane(batch)
	if prio == 0 || prio == len(batch) || (!backlog && !r.lanes.holdingStandard()) {
		return r.handle(ctx, batch, prio > 0, backlog)
	}
	var first, rest []int // the priority records, then the others
	for i, d := range batch {
		if d.Msg.Topic == r.cfg.PriorityTopic {
			first = append(first, i)
		} else {
			rest = append(rest, i)
		}
	}
	results := make([]error, len(batch))
	failed := false
	for _, part := range []struct {
		idx               []int
		priority, backlog bool
	}{{first, true, backlog}, {rest, false, false}} {
		sub := make([]kafkaio.Delivery, len(part.idx))
		for j, i := range part.idx {
			sub[j] = batch[i]
		}
		for j, err := range r.handle(ctx, sub, part.priority, part.backlog) {
			if err != nil {
				results[part.idx[j]], failed = err, true
			}
		}
	}
	return orNil(results, failed)
}

// lane counts the batch's priority records and reports whether one of
// their partitions has more records behind the batch's last (a backlog).
func (r *Runner) lane(batch []kafkaio.Delivery) (priority int, backlog bool) {
	if r.cfg.PriorityTopic == "" {
		return 0, false
	}
	last := map[int]kafka.Message{} // a priority partition's last record
	for _, d := range batch {
		if d.Msg.Topic == r.cfg.PriorityTopic {
			last[d.Msg.Partition] = d.Msg
			priority++
		}
	}
	for _, m := range last {
		if m.HighWaterMark > m.Offset+1 {
			backlog = true
		}
	}
	return priority, backlog
}

// handle delivers one lane's batch (priority: the priority lane's, with a
// backlog behind it or not) or a batch of both lanes' live records.
func (r *Runner) handle(ctx context.Context, batch []kafkaio.Delivery, priority, backlog bool) []error {
	results := make([]error, len(batch))
	if r.cfg.Ready != nil {
		if err := r.cfg.Ready(ctx); err != nil {
			for i := range results {
				results[i] = fmt.Errorf("destination not connected: %w", err)
			}
			return results
		}
	}
	failed := false
	var todo []*pending
	var unjudged []kafkaio.Record // events the filter could not judge: dead letters
	for i, d := range batch {
		if to, ok := header(d.Msg, HeaderDestination); ok && to != r.Name() {
			continue // a replay for another destination of this sink
		}
		var ev feedbackv1.FeedbackEvent
		if err := proto.Unmarshal(d.Msg.Value, &ev); err != nil || ev.EventId == "" {
			if err == nil {
				err = errors.New("FeedbackEvent without event_id")
			}
			results[i], failed = kafkaio.Permanent(kafkaio.ReasonUndecodableRecord, err), true
			continue
		}
		p := &pending{idx: i, ev: &Event{Ctx: d.Ctx, Feedback: &ev, Value: d.Msg.Value, checkpoint: r.cfg.Checkpoint}}
		if r.cfg.Filter != nil {
			ok, err := r.cfg.Filter.Eval(&ev)
			if err != nil {
				unjudged = append(unjudged, r.deadLetter(batch, p, fmt.Errorf("filter: %w", err), sinkv1.ErrorClass_ERROR_CLASS_PERMANENT))
				continue
			}
			if !ok {
				continue
			}
		}
		todo = append(todo, p)
	}
	if len(unjudged) > 0 {
		if err := r.produceDead(ctx, unjudged); err != nil {
			for i := range results {
				if results[i] == nil {
					results[i] = fmt.Errorf("dead-letter produce: %w", err)
				}
			}
			return results
		}
	}
	if len(todo) == 0 {
		return orNil(results, failed)
	}
	release, err := r.lanes.acquire(ctx, priority, backlog)
	if err != nil {
		return r.failAll(results, todo, err)
	}
	defer release()
	keys := make([]string, len(todo))
	for i, p := range todo {
		keys[i] = CheckpointKey(p.ev.Feedback)
	}
	seen, err := r.cfg.Checkpoint.Delivered(ctx, keys)
	if err != nil {
		return r.failAll(results, todo, fmt.Errorf("checkpoint unavailable: %w", err))
	}
	// One outcome per event: a copy already delivered (checkpoint) is done;
	// a second copy in this batch (a producer that retried after a crash
	// writes the event twice, a few offsets apart) shares the fate of the
	// first instead of being delivered again.
	fresh := todo[:0]
	firstOf := make(map[string]*pending, len(todo))
	var copies [][2]*pending // {copy, first}
	for i, p := range todo {
		if seen[i] {
			continue
		}
		if first, dup := firstOf[keys[i]]; dup {
			copies = append(copies, [2]*pending{p, first})
			continue
		}
		firstOf[keys[i]] = p
		fresh = append(fresh, p)
	}
	if len(copies) > 0 {
		r.cfg.Log.Info("repeated events in one batch delivered once", "sink", r.cfg.Sink, "destination", r.cfg.Destination, "repeats", len(copies))
		defer func() {
			for _, c := range copies {
				results[c[0].idx] = results[c[1].idx]
			}
		}()
	}
	delivered, deadP, dead, err := r.deliver(ctx, batch, fresh)
	// Dead letters are durable before anything is committed.
	if len(dead) > 0 {
		if derr := r.produceDead(ctx, dead); derr != nil {
			return r.failAll(results, fresh, fmt.Errorf("dead-letter produce: %w", derr))
		}
	}
	// The events the destination marked one by one (Event.MarkDelivered)
	// are recorded already.
	var dkeys []string
	for _, p := range delivered {
		if !p.ev.marked {
			dkeys = append(dkeys, CheckpointKey(p.ev.Feedback))
		}
	}
	if len(dkeys) > 0 {
		if merr := r.cfg.Checkpoint.Mark(ctx, dkeys); merr != nil {
			// Delivered but not remembered: a redelivery before the offset
			// commit could repeat them. Retried rather than committed blind.
			r.cfg.Log.Warn("checkpoint mark failed after delivery", "sink", r.cfg.Sink, "events", len(dkeys), "error", merr.Error())
			return r.failAll(results, delivered, fmt.Errorf("checkpoint mark: %w", merr))
		}
	}
	if err != nil { // stopped while events were still pending
		return r.failAll(results, notDone(fresh, delivered, deadP), err)
	}
	return orNil(results, failed)
}

// deliver runs delivery rounds until every event is delivered or dead. It
// returns early with ctx's error when the consumer stops.
func (r *Runner) deliver(ctx context.Context, batch []kafkaio.Delivery, todo []*pending) (delivered, deadP []*pending, dead []kafkaio.Record, err error) {
	now := r.cfg.Now()
	for _, p := range todo {
		p.first = now
	}
	for round := 1; len(todo) > 0; round++ {
		probe, err := r.cfg.Breaker.Acquire(ctx)
		if err != nil {
			return delivered, deadP, dead, err
		}
		if r.limiter != nil {
			if err := r.limiter.WaitN(ctx, min(len(todo), r.limiter.Burst())); err != nil {
				return delivered, deadP, dead, err
			}
		}
		events := make([]*Event, len(todo))
		for i, p := range todo {
			p.ev.Attempt = len(p.attempts) + 1
			events[i] = p.ev
		}
		start := r.cfg.Now()
		dctx, span := r.startDeliver(ctx, events, round)
		errs := r.dest.Deliver(dctx, events)
		took := r.cfg.Now().Sub(start)
		r.duration.Record(ctx, took.Seconds(), r.attrs)
		r.endDeliver(span, errs)
		var again []*pending
		var wait time.Duration
		anyDelivered := false
		for i, p := range todo {
			var e error
			if errs != nil {
				e = errs[i]
			}
			if e == nil {
				anyDelivered = true
				delivered = append(delivered, p)
				r.delivered.Add(ctx, 1, r.attrs)
				r.nDelivered.Add(1)
				if rcv := p.ev.Feedback.GetReceivedAt(); rcv != nil {
					r.fresh.Record(ctx, rcv.AsTime(), r.Name())
				}
				continue
			}
			class, after, status := Classify(e)
			p.attempts = append(p.attempts, &sinkv1.Attempt{At: timestamppb.New(start), Error: truncate(e.Error(), 1024),
				ErrorClass: class, StatusCode: int32(status), DurationMs: took.Milliseconds()})
			r.nFailed.Add(1)
			r.failed.Add(ctx, 1, metric.WithAttributes(attribute.String("sink", r.cfg.Sink), attribute.String("destination", r.Name()),
				attribute.String("class", class.String())))
			if class == sinkv1.ErrorClass_ERROR_CLASS_PERMANENT {
				dead, deadP = append(dead, r.deadLetter(batch, p, e, class)), append(deadP, p)
				continue
			}
			again = append(again, p)
			wait = max(wait, after)
		}
		switch {
		case anyDelivered || len(again) == 0:
			r.cfg.Breaker.Success()
		default:
			r.cfg.Breaker.Failure()
		}
		if len(again) == 0 {
			return delivered, deadP, dead, nil
		}
		// The budget runs only while the destination is otherwise healthy: an
		// outage (breaker open) pauses instead of exhausting every event.
		closed := r.cfg.Breaker.State() == retry.Closed && !probe
		backoff := retry.Backoff(round, r.cfg.BackoffBase, r.cfg.BackoffMax)
		todo = todo[:0]
		for _, p := range again {
			if closed {
				p.active += took + backoff
			}
			if closed && (len(p.attempts) >= r.cfg.MaxAttempts || p.active >= r.cfg.MaxElapsed) {
				dead = append(dead, r.deadLetter(batch, p, errors.New(p.attempts[len(p.attempts)-1].Error), sinkv1.ErrorClass_ERROR_CLASS_EXHAUSTED))
				deadP = append(deadP, p)
				continue
			}
			todo = append(todo, p)
		}
		if len(todo) == 0 {
			return delivered, deadP, dead, nil
		}
		r.retries.Add(ctx, 1, r.attrs)
		wait = max(wait, backoff)
		r.cfg.Log.Warn("delivery failed; retrying", "sink", r.cfg.Sink, "destination", r.cfg.Destination, "events", len(todo),
			"round", round, "retry_in", wait.String(), "breaker", r.cfg.Breaker.State().String(),
			"error", todo[0].attempts[len(todo[0].attempts)-1].Error)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return delivered, deadP, dead, ctx.Err()
		case <-t.C:
		}
	}
	return delivered, deadP, dead, nil
}

// startDeliver starts the "deliver <destination>" client span of one
// delivery call: a child of the first event's span, linked to every event's
// (a batch delivers records of many traces). The span is nil when spans are
// dropped (telemetry.SpansDropped).
func (r *Runner) startDeliver(ctx context.Context, events []*Event, round int) (context.Context, trace.Span) {
	parent := ctx
	if len(events) > 0 && events[0].Ctx != nil {
		parent = events[0].Ctx
	}
	if telemetry.SpansDropped() {
		// No span would be recorded: the call carries the first event's
		// trace context.
		return trace.ContextWithSpanContext(ctx, trace.SpanContextFromContext(parent)), nil
	}
	links := make([]trace.Link, 0, len(events))
	for _, ev := range events {
		if ev.Ctx == nil {
			continue
		}
		if sc := trace.SpanContextFromContext(ev.Ctx); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	_, span := r.tracer.Start(parent, "deliver "+r.Name(), trace.WithSpanKind(trace.SpanKindClient), trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("closedloop.sink", r.cfg.Sink),
			attribute.String("closedloop.destination", r.Name()),
			attribute.Int("closedloop.batch.size", len(events)),
			attribute.Int("closedloop.delivery.round", round),
		))
	// The consumer's context (cancellation) with the span's trace context.
	return trace.ContextWithSpan(ctx, span), span
}

// endDeliver ends a delivery span with the number of events that failed.
func (r *Runner) endDeliver(span trace.Span, errs []error) {
	if span == nil {
		return
	}
	failed := 0
	for _, e := range errs {
		if e != nil {
			failed++
		}
	}
	if failed > 0 {
		span.SetAttributes(attribute.Int("closedloop.batch.failed", failed))
		span.SetStatus(codes.Error, fmt.Sprintf("%d of the events failed", failed))
	}
	span.End()
}

func (r *Runner) failAll(results []error, ps []*pending, err error) []error {
	for _, p := range ps {
		results[p.idx] = err
	}
	return results
}

// notDone lists the events neither delivered nor dead-lettered.
func notDone(all, delivered, dead []*pending) []*pending {
	done := map[*pending]bool{}
	for _, p := range append(append([]*pending(nil), delivered...), dead...) {
		done[p] = true
	}
	var out []*pending
	for _, p := range all {
		if !done[p] {
			out = append(out, p)
		}
	}
	return out
}

func orNil(results []error, failed bool) []error {
	if !failed {
		return nil
	}
	return results
}
