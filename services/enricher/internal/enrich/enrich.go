// Package enrich is the enricher's batch handler. Per batch of one
// partition: decode and check each FeedbackEvent (unusable → quarantine),
// compute each lookup's key per event, resolve the distinct keys of every
// lookup at once (cache, then the service; each lookup bounded by its
// max_delay — what has no answer by then goes on marked "not enriched"),
// evaluate the routing rules over the event and the fields found, and
// produce every event to its lane (feedback.enriched.priority.v1 or
// feedback.enriched.v1) keyed by subject. The consumer commits only what
// was produced.
package enrich

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/feedback"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/telemetry"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/services/enricher/internal/lookup"
)

// Producer is the part of kafkaio.Producer the handler needs.
type Producer interface {
	ProduceEach(ctx context.Context, recs ...kafkaio.Record) []error
}

// Options configure a Handler.
type Options struct {
	Producer Producer
	// StandardTopic and PriorityTopic are the lanes.
	StandardTopic, PriorityTopic string
	Lookups                      []*lookup.Lookup
	// Rules in evaluation order (config.Enrichment.RoutingRules).
	Rules []config.Rule
	Log   *slog.Logger
	Now   func() time.Time
}

// Handler enriches and routes events.
type Handler struct {
	o       Options
	routed  metric.Int64Counter
	ruleErr metric.Int64Counter
	fresh   *telemetry.Freshness
}

// New returns a Handler.
func New(o Options) *Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	meter := otel.Meter("github.com/closedloop/closedloop/services/enricher")
	h := &Handler{o: o}
	h.routed, _ = meter.Int64Counter("closedloop.enricher.routed", metric.WithUnit("{event}"), metric.WithDescription("Events produced, by lane."))
	h.fresh = telemetry.NewFreshness(meter, "enricher")
	h.ruleErr, _ = meter.Int64Counter("closedloop.enricher.rule_errors", metric.WithUnit("{error}"), metric.WithDescription("Rules that could not be evaluated for an event, by rule."))
	return h
}

type item struct {
	idx  int
	ev   *feedbackv1.FeedbackEvent
	keys []string // per lookup; "" = no key
}

// HandleBatch implements kafkaio.BatchHandler.
func (h *Handler) HandleBatch(ctx context.Context, batch []kafkaio.Delivery) []error {
	results := make([]error, len(batch))
	failed := false
	items := make([]*item, 0, len(batch))
	for i, d := range batch {
		ev, err := feedback.Decode(d.Msg.Value)
		if err != nil {
			results[i], failed = err, true
			continue
		}
		it := &item{idx: i, ev: ev, keys: make([]string, len(h.o.Lookups))}
		for j, l := range h.o.Lookups {
			k, err := l.Config().KeyExpr.Eval(ev)
			if err != nil {
				k = "" // no key for this event (e.g. no respondent)
			}
			it.keys[j] = k
		}
		items = append(items, it)
	}

	// Every lookup at once, each over its distinct keys.
	answers := make([]map[string]*feedbackv1.LookupResult, len(h.o.Lookups))
	var wg sync.WaitGroup
	for j, l := range h.o.Lookups {
		var keys []string
		seen := map[string]bool{}
		for _, it := range items {
			if k := it.keys[j]; k != "" && !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		wg.Add(1)
		go func() { defer wg.Done(); answers[j] = l.Resolve(ctx, keys) }()
	}
	wg.Wait()

	now := timestamppb.New(h.o.Now())
	recs := make([]kafkaio.Record, 0, len(items))
	for _, it := range items {
		en := &feedbackv1.Enrichment{Lookups: map[string]*feedbackv1.LookupResult{}, EnrichedAt: now, Lane: feedbackv1.Lane_LANE_STANDARD}
		fields := map[string]any{}
		for j, l := range h.o.Lookups {
			res := &feedbackv1.LookupResult{Status: feedbackv1.LookupStatus_LOOKUP_STATUS_NO_KEY}
			if k := it.keys[j]; k != "" {
				res = answers[j][k]
			}
			en.Lookups[l.Name()] = res
			for name, v := range res.GetFields() {
				fields[name] = v.AsInterface()
			}
		}
		for _, r := range h.o.Rules {
			ok, err := r.Expr.Eval(it.ev, fields)
			if err != nil {
				en.RuleErrors = append(en.RuleErrors, r.Name+": "+err.Error())
				h.ruleErr.Add(ctx, 1, metric.WithAttributes(attribute.String("rule", r.Name)))
				continue
			}
			if !ok {
				continue
			}
			en.MatchedRules = append(en.MatchedRules, r.Name)
			for _, lb := range r.Labels {
				if !slices.Contains(en.Labels, lb) {
					en.Labels = append(en.Labels, lb)
				}
			}
			if r.Lane == "priority" {
				en.Lane = feedbackv1.Lane_LANE_PRIORITY
			}
		}
		it.ev.Enrichment = en
		v, err := feedback.WithEnrichment(batch[it.idx].Msg.Value, en)
		if err != nil {
			results[it.idx], failed = kafkaio.Permanent(kafkaio.ReasonUnencodableEvent, err), true
			continue
		}
		topic := h.o.StandardTopic
		if en.Lane == feedbackv1.Lane_LANE_PRIORITY {
			topic = h.o.PriorityTopic
		}
		recs = append(recs, kafkaio.Record{Topic: topic, Key: batch[it.idx].Msg.Key, Value: v, Context: batch[it.idx].Ctx})
	}
	if len(recs) == 0 {
		return orNil(results, failed)
	}
	errs := h.o.Producer.ProduceEach(ctx, recs...)
	n := 0
	for _, it := range items {
		if it.ev.Enrichment == nil || results[it.idx] != nil {
			continue
		}
		if errs != nil && errs[n] != nil {
			results[it.idx], failed = fmt.Errorf("produce to %s: %w", recs[n].Topic, errs[n]), true
		} else {
			h.routed.Add(ctx, 1, metric.WithAttributes(attribute.String("lane", it.ev.Enrichment.Lane.String())))
			if rcv := it.ev.GetReceivedAt(); rcv != nil {
				h.fresh.Record(ctx, rcv.AsTime(), "")
			}
		}
		n++
	}
	return orNil(results, failed)
}

func orNil(results []error, failed bool) []error {
	if !failed {
		return nil
	}
	return results
}
