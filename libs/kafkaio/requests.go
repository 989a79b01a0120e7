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
	once    sync.Once
	mu      sync.Mutex
	writers requestTotal[*kafka.Writer]
	readers requestTotal[*kafka.Reader]
}

// requestTotal sums one kind of request over the clients that send it,
// including those already closed.
type requestTotal[T comparable] struct {
	live  map[T]bool
	total int64
	read  func(T) int64 // requests since the last read
}

func (r *requestTotal[T]) add(c T) {
	kafkaRequests.mu.Lock()
	defer kafkaRequests.mu.Unlock()
	r.live[c] = true
}

func (r *requestTotal[T]) remove(c T) {
	kafkaRequests.mu.Lock()
	defer kafkaRequests.mu.Unlock()
	if r.live[c] {
		r.total += r.read(c)
		delete(r.live, c)
	}
}

func (r *requestTotal[T]) observe(_ context.Context, o metric.Int64Observer) error {
	kafkaRequests.mu.Lock()
	defer kafkaRequests.mu.Unlock()
	for c := range r.live {
		r.total += r.read(c)
	}
	o.Observe(r.total)
	return nil
}

func registerRequestCounters() {
	kafkaRequests.once.Do(func() {
		kafkaRequests.writers = requestTotal[*kafka.Writer]{live: map[*kafka.Writer]bool{}, read: func(w *kafka.Writer) int64 { return w.Stats().Writes }}
		kafkaRequests.readers = requestTotal[*kafka.Reader]{live: map[*kafka.Reader]bool{}, read: func(r *kafka.Reader) int64 { return r.Stats().Fetches }}
		meter := otel.Meter(instrumentation)
		_, _ = meter.Int64ObservableCounter("closedloop.kafka.writer.requests", metric.WithUnit("{request}"),
			metric.WithDescription("Produce requests sent by the process's batching producers (kafka-go Writers)."),
			metric.WithInt64Callback(kafkaRequests.writers.observe))
		_, _ = meter.Int64ObservableCounter("closedloop.kafka.fetch.requests", metric.WithUnit("{request}"),
			metric.WithDescription("Fetch requests sent by the process's consumers."),
			metric.WithInt64Callback(kafkaRequests.readers.observe))
	})
}

// countWriter adds w's produce requests to closedloop.kafka.writer.requests;
// forgetWriter keeps what it sent and stops reading it.
func countWriter(w *kafka.Writer) {
	registerRequestCounters()
	kafkaRequests.writers.add(w)
}

func forgetWriter(w *kafka.Writer) { kafkaRequests.writers.remove(w) }

// countReader adds r's fetch requests to closedloop.kafka.fetch.requests;
// forgetReader keeps what it sent and stops reading it.
func countReader(r *kafka.Reader) {
	registerRequestCounters()
	kafkaRequests.readers.add(r)
}

func forgetReader(r *kafka.Reader) { kafkaRequests.readers.remove(r) }
