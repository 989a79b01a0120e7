package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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

const instrumentation = "github.com/closedloop/closedloop/libs/kafkaio"

// ProducerConfig configures a Producer. Zero values take the stated defaults.
type ProducerConfig struct {
	Brokers []string
	// BatchTimeout is how long a partially filled batch waits for more records
	// before it is sent (default 2ms). kafka-go's own default of 1 s would make
	// every synchronous write take a second.
	BatchTimeout time.Duration
	// BatchSize is the most records in one produce request per partition (default 500).
	BatchSize int
	// WriteTimeout bounds one produce request to a broker (default 5s). Callers
	// bound the whole call with their context.
	WriteTimeout time.Duration
	// MaxAttempts is how often a batch is tried before the call fails (default 3).
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

// Producer writes records synchronously with acks=all. It is safe for
// concurrent use; concurrent calls share batches.
type Producer struct {
	w       *kafka.Writer
	limit   int
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
	latency metric.Float64Histogram
	failed  metric.Int64Counter
}

// NewProducer builds a producer. It does not connect until the first write.
func NewProducer(cfg ProducerConfig) *Producer {
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 2 * time.Millisecond
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "closedloop"
	}
	if cfg.MaxMessageBytes <= batchOverhead {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	transport := NewTransport(cfg.ClientID)
	meter := otel.Meter(instrumentation)
	latency, _ := meter.Float64Histogram("closedloop.kafka.produce.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from produce call to acknowledgement by all in-sync replicas."),
		metric.WithExplicitBucketBoundaries(telemetry.FastSeconds...))
	failed, _ := meter.Int64Counter("closedloop.kafka.produce.failures", metric.WithUnit("{record}"), metric.WithDescription("Records whose produce call failed."))
	p := &Producer{
		w: &kafka.Writer{
			Addr:         kafka.TCP(cfg.Brokers...),
			Balancer:     kafka.Murmur2Balancer{},
			RequiredAcks: kafka.RequireAll,
			BatchTimeout: cfg.BatchTimeout,
			BatchSize:    cfg.BatchSize,
			// kafka-go counts a batch's bytes by its messages' sizes; the
			// broker adds the batch header to them.
			BatchBytes:             int64(cfg.MaxMessageBytes - batchOverhead),
			WriteTimeout:           cfg.WriteTimeout,
			MaxAttempts:            cfg.MaxAttempts,
			WriteBackoffMin:        20 * time.Millisecond,
			WriteBackoffMax:        500 * time.Millisecond,
			AllowAutoTopicCreation: false,
			Transport:              transport,
		},
		limit:   cfg.MaxMessageBytes,
		tracer:  otel.Tracer(instrumentation),
		prop:    otel.GetTextMapPropagator(),
		latency: latency,
		failed:  failed,
	}
	countWriter(p.w)
	return p
}

// MaxMessageBytes is the producer's record size limit.
func (p *Producer) MaxMessageBytes() int { return p.limit }

// Produce writes the records and returns once every one of them was
// acknowledged by all in-sync replicas, or with the error of the first that
// was not. Each record gets a "send <topic>" span, child of ctx (or of the
// record's Context), whose context is injected into its headers.
func (p *Producer) Produce(ctx context.Context, recs ...Record) error {
	errs := p.ProduceEach(ctx, recs...)
	for i, e := range errs {
		if e != nil {
			return fmt.Errorf("produce to %s (record %d of %d): %w", recs[i].Topic, i+1, len(recs), e)
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
	msgs := make([]kafka.Message, 0, len(recs))
	idx := make([]int, 0, len(recs)) // msgs[j] is recs[idx[j]]
	spans := make([]trace.Span, len(recs))
	sizes := make([]int, len(recs))
	var errs []error
	for i, r := range recs {
		headers, span := startPublish(ctx, p.tracer, p.prop, r)
		spans[i] = span
		sizes[i] = EncodedSize(r.Key, r.Value, headers)
		if sizes[i] > p.limit {
			// Fails alone: the other records of the call are still written.
			if errs == nil {
				errs = make([]error, len(recs))
			}
			errs[i] = tooLarge(r.Topic, sizes[i], p.limit)
			continue
		}
		msgs = append(msgs, kafka.Message{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: headers})
		idx = append(idx, i)
	}
	start := time.Now()
	werrs := p.write(ctx, msgs)
	p.latency.Record(ctx, time.Since(start).Seconds())
	// The broker's limit may be smaller than ours (a topic set lower): a
	// batch it refuses as too large is sent again one record at a time, so
	// only a record that alone does not fit fails.
	var big []int
	for j, e := range werrs {
		if e != nil && errors.Is(e, kafka.MessageSizeTooLarge) {
			big = append(big, j)
		}
	}
	if len(big) > 1 {
		for _, j := range big {
			werrs[j] = nil
			if e := p.write(ctx, msgs[j:j+1]); e != nil {
				werrs[j] = e[0]
			}
		}
	}
	for j, e := range werrs {
		if e == nil {
			continue
		}
		if errs == nil {
			errs = make([]error, len(recs))
		}
		i := idx[j]
		if errors.Is(e, kafka.MessageSizeTooLarge) {
			e = tooLarge(recs[i].Topic, sizes[i], 0)
		}
		errs[i] = e
	}
	for i, span := range spans {
		if errs != nil && errs[i] != nil {
			span.RecordError(errs[i])
			span.SetStatus(codes.Error, errs[i].Error())
			p.failed.Add(ctx, 1, metric.WithAttributes(attribute.String("topic", recs[i].Topic)))
		}
		span.End()
	}
	return errs
}

// write writes msgs and returns nil or one error per message.
func (p *Producer) write(ctx context.Context, msgs []kafka.Message) []error {
	if len(msgs) == 0 {
		return nil
	}
	err := p.w.WriteMessages(ctx, msgs...)
	if err == nil {
		return nil
	}
	out := make([]error, len(msgs))
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) && len(werrs) == len(msgs) {
		copy(out, werrs)
		return out
	}
	for i := range out {
		out[i] = err
	}
	return out
}

// Close flushes pending writes and releases connections.
func (p *Producer) Close() error {
	err := p.w.Close()
	forgetWriter(p.w)
	return err
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

var producerKind = trace.WithSpanKind(trace.SpanKindProducer)

// startPublish starts the "send <topic>" producer span of a record (the
// OpenTelemetry messaging conventions: messaging.operation.name "send") and
// returns the record's headers with the span's trace context injected.
func startPublish(ctx context.Context, tracer trace.Tracer, prop propagation.TextMapPropagator, r Record) ([]kafka.Header, trace.Span) {
	if r.Context != nil {
		ctx = r.Context
	}
	headers := make([]kafka.Header, len(r.Headers), len(r.Headers)+2)
	copy(headers, r.Headers)
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
