package telemetry

import (
	"context"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// FreshnessName is the one instrument of end-to-end freshness: seconds from
// the ingress receiving the webhook to a stage finishing the event (its
// output durable in Kafka; for a sink, delivered at the destination), by
// stage and, for sinks, destination.
const FreshnessName = "closedloop.freshness"

// FreshnessSeconds are its bucket boundaries: 5 ms to an hour (a backlog
// after an outage is still measured, not clipped at 10 s).
var FreshnessSeconds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600}

// Freshness records FreshnessName for one stage.
type Freshness struct {
	h     metric.Float64Histogram
	stage attribute.KeyValue
	now   func() time.Time
	// sets caches the attribute set per destination: building one per
	// event was two allocations on the hot path.
	sets sync.Map // destination -> metric.MeasurementOption
}

// NewFreshness returns the recorder of stage ("normalizer", "enricher",
// "sink-warehouse").
func NewFreshness(meter metric.Meter, stage string) *Freshness {
	h, _ := meter.Float64Histogram(FreshnessName, metric.WithUnit("s"),
		metric.WithDescription("From the ingress receiving the webhook to the stage finishing the event (sinks: delivered), by stage and destination."),
		metric.WithExplicitBucketBoundaries(FreshnessSeconds...))
	return &Freshness{h: h, stage: attribute.String("stage", stage), now: time.Now}
}

// Record records one event received at receivedAt; destination names the
// sink's destination (empty for the other stages). A zero receivedAt is
// not recorded.
func (f *Freshness) Record(ctx context.Context, receivedAt time.Time, destination string) {
	if f == nil || receivedAt.IsZero() {
		return
	}
	now := f.now()
	age := max(now.Sub(receivedAt).Seconds(), 0)
	latest.set(f.stage.Value.AsString(), destination, age, now)
	opt, ok := f.sets.Load(destination)
	if !ok {
		set := attribute.NewSet(f.stage)
		if destination != "" {
			set = attribute.NewSet(f.stage, attribute.String("destination", destination))
		}
		opt, _ = f.sets.LoadOrStore(destination, metric.WithAttributeSet(set))
	}
	f.h.Record(ctx, age, opt.(metric.MeasurementOption))
}

// FreshnessSample is the latest event a stage (and destination) finished.
type FreshnessSample struct {
	Stage, Destination string
	// Seconds is its freshness; At is when it was finished.
	Seconds float64
	At      time.Time
}

// LatestFreshness lists, for each stage and destination of this process
// that finished an event, the latest one (the services' GetStatus reports
// them), sorted by stage and destination.
func LatestFreshness() []FreshnessSample {
	latest.mu.Lock()
	defer latest.mu.Unlock()
	out := make([]FreshnessSample, 0, len(latest.m))
	for _, s := range latest.m {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Stage != out[j].Stage {
			return out[i].Stage < out[j].Stage
		}
		return out[i].Destination < out[j].Destination
	})
	return out
}

type stageKey struct{ stage, destination string }

type latestFreshness struct {
	mu sync.Mutex
	m  map[stageKey]*FreshnessSample
}

// latest is process-wide, as the meter provider is.
var latest = &latestFreshness{m: map[stageKey]*FreshnessSample{}}

func (l *latestFreshness) set(stage, destination string, seconds float64, at time.Time) {
	l.mu.Lock()
	s := l.m[stageKey{stage, destination}]
	if s == nil {
		s = &FreshnessSample{Stage: stage, Destination: destination}
		l.m[stageKey{stage, destination}] = s
	}
	if !at.Before(s.At) {
		s.Seconds, s.At = seconds, at
	}
	l.mu.Unlock()
}
