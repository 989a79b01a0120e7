package kafkaio

import (
	"context"
	"sync"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// Kafka requests per second are a cost the batch sizes decide: this counter
// makes the fetches visible per process (the produce requests are counted
// where they are sent, closedloop.kafka.produce.requests). kafka-go's Reader
// counts its fetches in Stats, which resets on each call, so one place
// polls them all at each collection and keeps the totals.
var kafkaRequests struct {
	once    sync.Once
	mu      sync.Mutex
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
		kafkaRequests.readers = requestTotal[*kafka.Reader]{live: map[*kafka.Reader]bool{}, read: func(r *kafka.Reader) int64 { return r.Stats().Fetches }}
		meter := otel.Meter(instrumentation)
		_, _ = meter.Int64ObservableCounter("closedloop.kafka.fetch.requests", metric.WithUnit("{request}"),
			metric.WithDescription("Fetch requests sent by the process's consumers."),
			metric.WithInt64Callback(kafkaRequests.readers.observe))
	})
}

// countReader adds r's fetch requests to closedloop.kafka.fetch.requests;
// forgetReader keeps what it sent and stops reading it.
func countReader(r *kafka.Reader) {
	registerRequestCounters()
	kafkaRequests.readers.add(r)
}

func forgetReader(r *kafka.Reader) { kafkaRequests.readers.remove(r) }
