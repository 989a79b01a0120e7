package kafkaio

import (
	"context"
	"fmt"
	"strconv"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/telemetry"
)

const instrumentation = "github.com/closedloop/closedloop/libs/kafkaio"

// ProducerConfig configures a Producer. Zero values take the stated defaults.
type ProducerConfig struct {
	Brokers []string
	// BatchSize is the most records in one produce request (default 1000).
	BatchSize int
	// MaxAttempts is BatcherConfig.MaxAttempts (default 3).
	MaxAttempts int
	// ClientID names this producer in broker logs (default "closedloop").
	ClientID string
	// MaxMessageBytes is the smallest max.message.bytes of the topics this
	// producer writes (default DefaultMaxMessageBytes; read it with
	// TopicMaxMessageBytes; service.Service does). Batches never exceed it, and a record that
	// cannot fit fails alone with a RecordTooLargeError (Permanent) while the
	// other records of the call are written.
	MaxMessageBytes int
}

// Record is one record to produce.
type Record struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers []kafka.Header
	// Context, when set, is the trace parent of this record's publish span
	// instead of the ctx given to Produce: a batch of records from different
	// traces keeps each record in its own trace.
	Context context.Context
}

// Producer writes records synchronously with acks=all, retrying what may
// pass (BatcherConfig.MaxAttempts). It is safe for concurrent use. It batches as the Batcher does —
// one request per broker carrying every partition's records, sent as soon
// as the broker's previous request returned, never waiting on a timer —
// with one request in flight per broker, so the records of one partition
// are written in the order of the calls, retries included (a partition that
// failed is sent again before anything behind it).
// A stage's handler call of 6 records over 6 partitions is one produce
// request instead of one per partition, and returns without waiting for
// a batch timeout.
type Producer struct {
	b      *Batcher
	failed metric.Int64Counter
}

// NewProducer builds a producer. It does not connect until the first write.
func NewProducer(cfg ProducerConfig) *Producer {
	failed, _ := otel.Meter(instrumentation).Int64Counter("closedloop.kafka.produce.failures", metric.WithUnit("{record}"),
		metric.WithDescription("Records whose produce call failed."))
	return &Producer{
		b: NewBatcher(BatcherConfig{Brokers: cfg.Brokers, MaxBatch: cfg.BatchSize, ClientID: cfg.ClientID,
			InFlight: 1, MaxAttempts: cfg.MaxAttempts, MaxMessageBytes: cfg.MaxMessageBytes}),
		failed: failed,
	}
}

// MaxMessageBytes is the producer's record size limit.
func (p *Producer) MaxMessageBytes() int { return p.b.limit }

// Produce writes the records and returns once every one of them was
// acknowledged by all in-sync replicas, or with the error of the first that
// was not. Each record gets a "send <topic>" span, child of ctx (or of the
// record's Context), whose context is injected into its headers.
func (p *Producer) Produce(ctx context.Context, recs ...Record) error {
	errs := p.ProduceEach(ctx, recs...)
	for i, e := range errs {
		if e != nil {
			return fmt.Errorf("record %d of %d: %w", i+1, len(recs), e)
		}
	}
	return nil
}

// ProduceEach is Produce with one result per record: nil when every record
// was acknowledged, else a slice where errs[i] is the error of recs[i] (nil
// for the records that were written). A caller that marks records done can
// then mark exactly the written ones.
func (p *Producer) ProduceEach(ctx context.Context, recs ...Record) []error {
	if len(recs) == 0 {
		return nil
	}
	errs := p.b.ProduceEach(ctx, recs...)
	for i, e := range errs {
		if e != nil {
			p.failed.Add(ctx, 1, metric.WithAttributes(attribute.String("topic", recs[i].Topic)))
		}
	}
	return errs
}

// Close waits for the records already queued and stops the senders.
func (p *Producer) Close() error { return p.b.Close() }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

var producerKind = trace.WithSpanKind(trace.SpanKindProducer)

// startPublish starts the "send <topic>" producer span of a record (the
// OpenTelemetry messaging conventions: messaging.operation.name "send") and
// returns the record's headers with the span's trace context injected. Its
// span is nil when spans are dropped (telemetry.SpansDropped).
func startPublish(ctx context.Context, tracer trace.Tracer, prop propagation.TextMapPropagator, r Record) ([]kafka.Header, trace.Span) {
	if r.Context != nil {
		ctx = r.Context
	}
	headers := make([]kafka.Header, len(r.Headers), len(r.Headers)+2)
	copy(headers, r.Headers)
	if telemetry.SpansDropped() {
		// No span would be recorded: the record carries its parent's trace
		// context.
		prop.Inject(ctx, HeaderCarrier{Headers: &headers})
		return headers, nil
	}
	sctx, span := tracer.Start(ctx, "send "+r.Topic, producerKind)
	// The attributes are built only for a span that records: with no
	// exporter (spans exist for their ids only) they were ~10 allocations
	// per record for nobody. A sampler therefore decides without them.
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.name", "send"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", r.Topic),
			attribute.String("messaging.kafka.message.key", string(r.Key)),
		)
	}
	prop.Inject(sctx, HeaderCarrier{Headers: &headers})
	return headers, span
}
