package api

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/closedloop/closedloop/services/admin/internal/dlq"
)

// gaugeSample is one round of the pipeline gauges.
type gaugeSample struct {
	lag   []lagPoint
	depth map[string]int64 // sink -> unresolved dead letters
}

type lagPoint struct {
	stage, group, topic string
	partition           int
	lag                 int64
}

// RunGauges serves the pipeline's authoritative backlog as metrics: each
// stage's lag per partition from its group's committed offsets (what the
// group still has to do, whichever instance holds the partition; a
// consumer's own closedloop.consumer.lag only knows its partitions) and
// each sink's dead letters not yet replayed or discarded. They are sampled
// every interval in the background, so a scrape never waits on Kafka.
func (s *Server) RunGauges(ctx context.Context, meter metric.Meter, every time.Duration) error {
	var mu sync.Mutex
	var cur gaugeSample
	_, err := meter.Int64ObservableGauge("closedloop.pipeline.lag", metric.WithUnit("{record}"),
		metric.WithDescription("Records a stage's consumer group has not committed yet, by stage, group, topic and partition (sampled by the admin)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range cur.lag {
				o.Observe(p.lag, metric.WithAttributes(attribute.String("stage", p.stage), attribute.String("group", p.group),
					attribute.String("topic", p.topic), attribute.String("partition", strconv.Itoa(p.partition))))
			}
			return nil
		}))
	if err != nil {
		return err
	}
	_, err = meter.Int64ObservableGauge("closedloop.dlq.depth", metric.WithUnit("{record}"),
		metric.WithDescription("Dead letters neither replayed nor discarded, by sink (sampled by the admin)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			mu.Lock()
			defer mu.Unlock()
			for sink, n := range cur.depth {
				o.Observe(n, metric.WithAttributes(attribute.String("sink", sink)))
			}
			return nil
		}))
	if err != nil {
		return err
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		next := s.sampleGauges(ctx)
		mu.Lock()
		cur = next
		mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Server) sampleGauges(ctx context.Context) gaugeSample {
	out := gaugeSample{depth: map[string]int64{}}
	for _, st := range s.o.Stages {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		parts, err := s.o.Offsets.Group(cctx, st.Group, st.Topics)
		cancel()
		if err != nil {
			s.o.Log.Debug("pipeline lag gauge: group offsets", "group", st.Group, "error", err.Error())
			continue
		}
		for _, p := range parts {
			out.lag = append(out.lag, lagPoint{stage: st.Name, group: st.Group, topic: p.Topic, partition: p.Partition, lag: p.Lag})
		}
		if st.Sink != "" {
			if _, done := out.depth[st.Sink]; done {
				continue
			}
			n, err := s.o.DLQ.Depth(ctx, st.Sink)
			switch {
			case err == nil:
				out.depth[st.Sink] = int64(n)
			case errors.Is(err, dlq.ErrNotFound):
				out.depth[st.Sink] = 0
			default:
				s.o.Log.Debug("dlq depth gauge", "sink", st.Sink, "error", err.Error())
			}
		}
	}
	return out
}
