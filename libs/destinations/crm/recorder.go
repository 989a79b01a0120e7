package crm

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/audit"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// DefaultDeadline is how long an unsubscribe may take to reach a CRM
// before closedloop.unsubscribe.overdue counts it (the alert
// UnsubscribeNotApplied fires on it).
const DefaultDeadline = 5 * time.Minute

// Recorder records each unsubscribe's propagation to one CRM destination:
// pending from its first delivery (a sorted set in Redis, by when it was
// received, shared by every replica), then its outcome — kept in Redis
// first, so a retry records the same outcome — as a Propagation on the
// unsubscribes topic and an entry on the audit topic. An unsubscribe is
// done only when both are written.
type Recorder struct {
	RDB redis.UniversalClient
	// Prefix of its keys: <Prefix>pending (the sorted set),
	// <Prefix>outcome:<event id>.
	Prefix string
	// Records writes the Propagation records; Topic is theirs.
	Records sink.Producer
	Topic   string
	// Audit, when set, gets an entry per outcome.
	Audit *audit.Writer
	// Sink, Destination and Kind name where it was applied.
	Sink, Destination, Kind string
	// Deadline (default DefaultDeadline) makes a pending unsubscribe overdue.
	Deadline time.Duration
	Now      func() time.Time
}

func (r *Recorder) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Recorder) deadline() time.Duration {
	if r.Deadline > 0 {
		return r.Deadline
	}
	return DefaultDeadline
}

// Pending marks the unsubscribes pending (a no-op for those already).
func (r *Recorder) Pending(ctx context.Context, outs []*OptOut) error {
	if len(outs) == 0 {
		return nil
	}
	zs := make([]redis.Z, len(outs))
	for i, o := range outs {
		zs[i] = redis.Z{Score: float64(received(o.Event.Feedback).UnixMilli()), Member: o.Event.Feedback.EventId}
	}
	return r.RDB.ZAddNX(ctx, r.Prefix+"pending", zs...).Err()
}

func received(f *feedbackv1.FeedbackEvent) time.Time {
	if f.ReceivedAt != nil {
		return f.ReceivedAt.AsTime()
	}
	return time.Now()
}

// Record records an unsubscribe's outcome; an error means it is not
// recorded yet (the event is to be retried).
func (r *Recorder) Record(ctx context.Context, o *OptOut, out Outcome) error {
	f := o.Event.Feedback
	key := r.Prefix + "outcome:" + f.EventId
	var p sinkv1.Propagation
	b, err := r.RDB.Get(ctx, key).Bytes()
	if err != nil || proto.Unmarshal(b, &p) != nil || p.EventId != f.EventId {
		// Not recorded before (else: the same outcome again, its write to
		// Kafka may not have happened).
		p = sinkv1.Propagation{EventId: f.EventId, Source: f.Source, Provider: f.Provider, Email: o.Email,
			PersonId: f.GetRespondent().GetId(), Sink: r.Sink, Destination: r.Destination, Kind: r.Kind,
			ReceivedAt: timestamppb.New(received(f)), OccurredAt: f.OccurredAt, AppliedAt: timestamppb.New(r.now()),
			Result: out.Result, Detail: out.Detail, Attempts: int32(max(o.Event.Attempt, 1))}
		if b, err = proto.Marshal(&p); err != nil {
			return sink.Permanent(err)
		}
		if err := r.RDB.Set(ctx, key, b, 30*24*time.Hour).Err(); err != nil {
			return sink.Retryable(fmt.Errorf("recording the unsubscribe's outcome in Redis: %w", err), 0)
		}
	}
	if err := r.Records.Produce(ctx, kafkaio.Record{Topic: r.Topic, Key: []byte(p.Email), Value: b}); err != nil {
		return sink.Retryable(fmt.Errorf("recording the unsubscribe's propagation on %s: %w", r.Topic, err), 0)
	}
	if r.Audit != nil {
		req, _ := json.Marshal(map[string]any{"event_id": p.EventId, "email": p.Email, "source": p.Source,
			"destination": p.Destination, "kind": p.Kind, "received_at": p.ReceivedAt.AsTime(), "detail": p.Detail})
		if err := r.Audit.Write(ctx, audit.Entry{At: p.AppliedAt.AsTime(), Who: p.Email, Role: "unsubscriber", Service: r.Sink,
			Via: p.Source, Method: "crm.unsubscribe/" + p.Destination, Request: req, Phase: audit.Completed,
			Result: ResultName(p.Result)}); err != nil {
			return sink.Retryable(err, 0)
		}
	}
	if err := r.RDB.ZRem(ctx, r.Prefix+"pending", f.EventId).Err(); err != nil {
		return sink.Retryable(fmt.Errorf("clearing the pending unsubscribe in Redis: %w", err), 0)
	}
	attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("destination", r.Destination), attribute.String("result", ResultName(p.Result))))
	meters.propagations.Add(ctx, 1, attrs)
	meters.took.Record(ctx, p.AppliedAt.AsTime().Sub(p.ReceivedAt.AsTime()).Seconds(), attrs)
	return nil
}

// ResultName is a result's name: applied, already_opted_out,
// unknown_contact, failed.
func ResultName(r sinkv1.PropagationResult) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "PROPAGATION_RESULT_"))
}

// PendingCounts are the pending unsubscribes and those older than the
// deadline.
func (r *Recorder) PendingCounts(ctx context.Context) (pending, overdue int64, err error) {
	pipe := r.RDB.Pipeline()
	all := pipe.ZCard(ctx, r.Prefix+"pending")
	late := pipe.ZCount(ctx, r.Prefix+"pending", "-inf", strconv.FormatInt(r.now().Add(-r.deadline()).UnixMilli(), 10))
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, 0, err
	}
	return all.Val(), late.Val(), nil
}

var meters struct {
	once         sync.Once
	propagations metric.Int64Counter
	took         metric.Float64Histogram
	updates      metric.Int64Counter
	limited      metric.Int64Counter
	mu           sync.Mutex
	recorders    map[string]*Recorder
}

// PropagationSeconds are the buckets of closedloop.unsubscribe.propagation.duration.
var PropagationSeconds = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

func init() {
	meter := otel.Meter("github.com/closedloop/closedloop/libs/destinations/crm")
	meters.recorders = map[string]*Recorder{}
	meters.propagations, _ = meter.Int64Counter("closedloop.unsubscribe.propagations", metric.WithUnit("{unsubscribe}"),
		metric.WithDescription("Unsubscribes propagated to a CRM destination, by result (applied, already_opted_out, unknown_contact, failed)."))
	meters.took, _ = meter.Float64Histogram("closedloop.unsubscribe.propagation.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from receiving an unsubscribe to the CRM's answer, by destination and result."),
		metric.WithExplicitBucketBoundaries(PropagationSeconds...))
	meters.updates, _ = meter.Int64Counter("closedloop.crm.contact_updates", metric.WithUnit("{event}"),
		metric.WithDescription("Feedback events at a CRM destination by outcome: written, superseded (the contact holds newer feedback), unknown_contact, rejected."))
	meters.limited, _ = meter.Int64Counter("closedloop.crm.rate_limited", metric.WithUnit("{request}"),
		metric.WithDescription("Requests a CRM refused for its rate limit or quota, by destination and policy (HubSpot: ten_secondly_rolling, daily; Salesforce: daily_quota)."))
	pending, _ := meter.Int64ObservableGauge("closedloop.unsubscribe.pending", metric.WithUnit("{unsubscribe}"),
		metric.WithDescription("Unsubscribes a CRM destination has received and not yet applied."))
	overdue, _ := meter.Int64ObservableGauge("closedloop.unsubscribe.overdue", metric.WithUnit("{unsubscribe}"),
		metric.WithDescription("Pending unsubscribes received longer ago than the destination's unsubscribe_deadline (default 5m)."))
	_, _ = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		meters.mu.Lock()
		rs := make([]*Recorder, 0, len(meters.recorders))
		for _, r := range meters.recorders {
			rs = append(rs, r)
		}
		meters.mu.Unlock()
		for _, r := range rs {
			c, cancel := context.WithTimeout(ctx, 2*time.Second)
			p, late, err := r.PendingCounts(c)
			cancel()
			if err != nil {
				continue // no value rather than a wrong one
			}
			attrs := metric.WithAttributes(attribute.String("destination", r.Destination))
			o.ObserveInt64(pending, p, attrs)
			o.ObserveInt64(overdue, late, attrs)
		}
		return nil
	}, pending, overdue)
}

// Observe reports the recorder's pending and overdue unsubscribes.
func Observe(r *Recorder) {
	meters.mu.Lock()
	defer meters.mu.Unlock()
	meters.recorders[r.Destination] = r
}

func countUpdates(ctx context.Context, destination, outcome string, n int) {
	if n > 0 {
		meters.updates.Add(ctx, int64(n), metric.WithAttributes(attribute.String("destination", destination), attribute.String("outcome", outcome)))
	}
}

// Recorded says which unsubscribes have an outcome already (a retry after
// the CRM answered): they are recorded again, not applied again.
func (r *Recorder) Recorded(ctx context.Context, outs []*OptOut) ([]bool, error) {
	pipe := r.RDB.Pipeline()
	cmds := make([]*redis.IntCmd, len(outs))
	for i, o := range outs {
		cmds[i] = pipe.Exists(ctx, r.Prefix+"outcome:"+o.Event.Feedback.EventId)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading unsubscribe outcomes in Redis: %w", err)
	}
	out := make([]bool, len(outs))
	for i, c := range cmds {
		out[i] = c.Val() > 0
	}
	return out, nil
}

// RateLimited counts a request the CRM refused for its limit (policy:
// which one).
func RateLimited(ctx context.Context, destination, policy string) {
	meters.limited.Add(ctx, 1, metric.WithAttributes(attribute.String("destination", destination), attribute.String("policy", strings.ToLower(policy))))
}
