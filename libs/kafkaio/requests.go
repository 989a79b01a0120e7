package kafkaio

import (
	"context"
	"sync"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// Kafka requests per second are a cost the batch sizes decide: these
// counters make them visible per process. kafka-go's Writer and Reader
// count their produce and fetch requests in Stats, which resets on each
// call, so one place polls them all at each collection and keeps the totals.
var kafkaRequests struct {
	once     sync.Once
	mu       sync.Mutex
	writers  map[*kafka.Writer]bool
	readers  map[*kafka.Reader]bool
	produced int64 // produce requests of the writers (the Batcher counts its own)
	fetches  int64
}

func registerRequestCounters() {
	kafkaRequests.once.Do(func() {
		kafkaRequests.writers = map[*kafka.Writer]bool{}
		kafkaRequests.readers = map[*kafka.Reader]bool{}
		meter := otel.Meter(instrumentation)
		_, _ = meter.Int64ObservableCounter("closedloop.kafka.writer.requests", metric.WithUnit("{request}"),
			metric.WithDescription("Produce requests sent by the process's batching producers (kafka-go Writers)."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				kafkaRequests.mu.Lock()
				defer kafkaRequests.mu.Unlock()
				for w := range kafkaRequests.writers {
					kafkaRequests.produced += w.Stats().Writes
				}
				o.Observe(kafkaRequests.produced)
				return nil
			}))
		_, _ = meter.Int64ObservableCounter("closedloop.kafka.fetch.requests", metric.WithUnit("{request}"),
			metric.WithDescription("Fetch requests sent by the process's consumers."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				kafkaRequests.mu.Lock()
				defer kafkaRequests.mu.Unlock()
				for r := range kafkaRequests.readers {
					kafkaRequests.fetches += r.Stats().Fetches
				}
				o.Observe(kafkaRequests.fetches)
				return nil
			}))
	})
}

// countWriter adds w's produce requests to closedloop.kafka.writer.requests
// until forgetWriter.
func countWriter(w *kafka.Writer) {
	registerRequestCounters()
	kafkaRequests.mu.Lock()
	kafkaRequests.writers[w] = true
	kafkaRequests.mu.Unlock()
}

func forgetWriter(w *kafka.Writer) {
	kafkaRequests.mu.Lock()
	if kafkaRequests.writers[w] {
		kafkaRequests.produced += w.Stats().Writes
		delete(kafkaRequests.writers, w)
	}
	kafkaRequests.mu.Unlock()
}

// countReader adds r's fetch requests to closedloop.kafka.fetch.requests
// until forgetReader.
func countReader(r *kafka.Reader) {
	registerRequestCounters()
	kafkaRequests.mu.Lock()
	kafkaRequests.readers[r] = true
	kafkaRequests.mu.Unlock()
}

func forgetReader(r *kafka.Reader) {
	kafkaRequests.mu.Lock()
	if kafkaRequests.readers[r] {
		kafkaRequests.fetches += r.Stats().Fetches
		delete(kafkaRequests.readers, r)
	}
	kafkaRequests.mu.Unlock()
}
