package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/telemetry"
)

// Batcher is a producer for many concurrent callers that each wait for
// their own record (the ingress: one record per HTTP request). It batches
// naturally instead of waiting for a timer: each partition has at most
// InFlight produce requests in flight; records that arrive meanwhile are
// sent together in the next request as soon as one returns. An idle partition sends a record at
// once (latency of one round trip); a busy one sends bigger batches
// (throughput). Every request is acks=all and the partition is chosen by the
// murmur2 hash of the key, as Producer does.
type Batcher struct {
	client   *kafka.Client
	maxBatch int
	limit    int
	inFlight int
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	latency  metric.Float64Histogram
	sizes    metric.Int64Histogram

	partsMu sync.Mutex
	parts   map[string][]int // topic -> partition ids

	// mu guards queues and closed; Produce holds it shared while it enqueues
	// so that Close cannot close a queue under it.
	mu     sync.RWMutex
	queues map[topicPartition]chan *pending
	closed bool
	wg     sync.WaitGroup
}

type topicPartition struct {
	topic     string
	partition int
}

type pending struct {
	key, value []byte
	headers    []kafka.Header
	size       int // EncodedSize without the batch header
	done       chan error
}

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	Brokers []string
	// MaxBatch is the most records in one produce request (default 1000).
	MaxBatch int
	// ClientID names the producer in broker logs (default "closedloop").
	ClientID string
	// InFlight is how many produce requests a partition may have in flight
	// (default 2). Records of one partition may then be written out of the
	// order of the calls — fine for records whose keys are all distinct,
	// such as the ingress's event ids; use 1 to keep call order.
	InFlight int
	// MaxMessageBytes is the topic's max.message.bytes (default
	// DefaultMaxMessageBytes): a produce request's batch for a partition
	// never exceeds it, so large records cannot make the small ones sent
	// with them fail, and a record that cannot fit fails alone at once.
	MaxMessageBytes int
}

// NewBatcher returns a batcher; it connects on first use.
func NewBatcher(cfg BatcherConfig) *Batcher {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "closedloop"
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 2
	}
	if cfg.MaxMessageBytes <= batchOverhead {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	meter := otel.Meter(instrumentation)
	b := &Batcher{
		client:   &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second, Transport: NewTransport(cfg.ClientID)},
		maxBatch: cfg.MaxBatch,
		limit:    cfg.MaxMessageBytes,
		inFlight: cfg.InFlight,
		tracer:   otel.Tracer(instrumentation),
		prop:     otel.GetTextMapPropagator(),
		parts:    map[string][]int{},
		queues:   map[topicPartition]chan *pending{},
	}
	b.latency, _ = meter.Float64Histogram("closedloop.kafka.produce.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from produce call to acknowledgement by all in-sync replicas."),
		metric.WithExplicitBucketBoundaries(telemetry.FastSeconds...))
	b.sizes, _ = meter.Int64Histogram("closedloop.kafka.produce.batch.size", metric.WithUnit("{record}"), metric.WithDescription("Records per produce request of the natural batcher."),
		metric.WithExplicitBucketBoundaries(telemetry.Records...))
	return b
}

// ErrClosed is returned by Produce after Close.
var ErrClosed = errors.New("kafkaio: producer closed")

// Produce writes the records and returns once every one was acknowledged
// by all in-sync replicas, or with the first error. It honours ctx: a caller
// whose deadline passes gets ctx's error (the record may still be written).
func (b *Batcher) Produce(ctx context.Context, recs ...Record) error {
	start := time.Now()
	waits := make([]chan error, len(recs))
	spans := make([]trace.Span, len(recs))
	for i, r := range recs {
		headers, span := startPublish(ctx, b.tracer, b.prop, r)
		spans[i] = span
		size := EncodedSize(r.Key, r.Value, headers)
		if size > b.limit {
			err := fmt.Errorf("produce to %s: %w", r.Topic, tooLarge(r.Topic, size, b.limit))
			endSpans(spans[:i+1], err)
			return err
		}
		p := &pending{key: r.Key, value: r.Value, headers: headers, size: size - batchOverhead, done: make(chan error, 1)}
		waits[i] = p.done
		if err := b.enqueue(ctx, r.Topic, r.Key, p); err != nil {
			endSpans(spans[:i+1], err)
			return err
		}
	}
	var first error
	for i, w := range waits {
		var err error
		select {
		case err = <-w:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			err = fmt.Errorf("produce to %s: %w", recs[i].Topic, err)
			if first == nil {
				first = err
			}
		}
		endSpans(spans[i:i+1], err)
	}
	b.latency.Record(ctx, time.Since(start).Seconds())
	return first
}

func endSpans(spans []trace.Span, err error) {
	for _, s := range spans {
		if s == nil {
			continue
		}
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, err.Error())
		}
		s.End()
	}
}

// enqueue hands p to the sender of the key's partition, starting it.
func (b *Batcher) enqueue(ctx context.Context, topic string, key []byte, p *pending) error {
	parts, err := b.partitions(ctx, topic)
	if err != nil {
		return err
	}
	tp := topicPartition{topic, kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: key}, parts...)}
	b.mu.RLock()
	q, ok := b.queues[tp]
	closed := b.closed
	b.mu.RUnlock()
	if !ok && !closed {
		b.mu.Lock()
		if q, ok = b.queues[tp]; !ok && !b.closed {
			q = make(chan *pending, 4*b.maxBatch)
			b.queues[tp] = q
			for range b.inFlight {
				b.wg.Add(1)
				go b.send(tp, q)
			}
		}
		b.mu.Unlock()
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	select {
	case q <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// partitions returns the topic's partition ids, from metadata on first use.
func (b *Batcher) partitions(ctx context.Context, topic string) ([]int, error) {
	b.partsMu.Lock()
	parts, ok := b.parts[topic]
	b.partsMu.Unlock()
	if ok {
		return parts, nil
	}
	md, err := b.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name == topic && t.Error == nil && len(t.Partitions) > 0 {
			for _, p := range t.Partitions {
				parts = append(parts, p.ID)
			}
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions (does it exist?)", topic)
	}
	b.partsMu.Lock()
	b.parts[topic] = parts
	b.partsMu.Unlock()
	return parts, nil
}

// send is the partition's sender: take what is queued (waiting for the
// first record) up to MaxBatch records and MaxMessageBytes, send it as one
// request, answer every caller, repeat. A record that would overflow the
// batch starts the next one.
func (b *Batcher) send(tp topicPartition, q chan *pending) {
	defer b.wg.Done()
	batch := make([]*pending, 0, b.maxBatch)
	var carry *pending
	for {
		first := carry
		carry = nil
		if first == nil {
			p, ok := <-q
			if !ok {
				return
			}
			first = p
		}
		batch = append(batch[:0], first)
		bytes := batchOverhead + first.size
	drain:
		for len(batch) < b.maxBatch {
			select {
			case p, ok := <-q:
				if !ok {
					break drain
				}
				if bytes+p.size > b.limit {
					carry = p
					break drain
				}
				batch = append(batch, p)
				bytes += p.size
			default:
				break drain
			}
		}
		b.write(tp, batch)
	}
}

func (b *Batcher) write(tp topicPartition, batch []*pending) {
	recs := make([]kafka.Record, len(batch))
	for i, p := range batch {
		recs[i] = kafka.Record{Key: kafka.NewBytes(p.key), Value: kafka.NewBytes(p.value), Headers: p.headers}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b.sizes.Record(ctx, int64(len(batch)), metric.WithAttributes(attribute.String("topic", tp.topic)))
	resp, err := b.client.Produce(ctx, &kafka.ProduceRequest{
		Topic: tp.topic, Partition: tp.partition, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...),
	})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if errors.Is(err, kafka.MessageSizeTooLarge) {
		// The topic's limit is below ours: send the records one by one so
		// that only a record that alone does not fit fails.
		if len(batch) > 1 {
			for i := range batch {
				b.write(tp, batch[i:i+1])
			}
			return
		}
		err = tooLarge(tp.topic, batch[0].size+batchOverhead, 0)
	}
	if err != nil {
		// The partition may have moved or the topic changed: look it up again.
		b.partsMu.Lock()
		delete(b.parts, tp.topic)
		b.partsMu.Unlock()
	}
	for i, p := range batch {
		perr := err
		if perr == nil && resp != nil {
			perr = resp.RecordErrors[i]
		}
		p.done <- perr
	}
}

// Close stops the senders after the queued records were sent.
func (b *Batcher) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for _, q := range b.queues {
		close(q)
	}
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}
