package api

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
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

// sampleGauges takes the numbers from the pipeline status, so the gauges
// cover the same stages (the webhook destinations' groups too) as
// closedloopctl status.
func (s *Server) sampleGauges(ctx context.Context) gaugeSample {
	out := gaugeSample{depth: map[string]int64{}}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := s.GetPipelineStatus(cctx, nil)
	if err != nil {
		s.o.Log.Debug("pipeline gauges", "error", err.Error())
		return out
	}
	for _, st := range resp.Stages {
		for _, p := range st.Partitions {
			out.lag = append(out.lag, lagPoint{stage: st.Name, group: st.Group, topic: p.Topic, partition: int(p.Partition), lag: p.Lag})
		}
		// A sink's stages are "sink-…" and "sink-…/<destination>"; they
		// share the sink's dead-letter topic.
		if sink, _, _ := strings.Cut(st.Name, "/"); strings.HasPrefix(sink, "sink-") {
			out.depth[sink] = max(out.depth[sink], st.DlqDepth)
		}
	}
	return out
}
