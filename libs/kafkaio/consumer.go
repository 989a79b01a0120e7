package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/status"
	"github.com/closedloop/closedloop/libs/telemetry"
)

// Handler does the work for one record. It returns nil once the work is
// durable (produced with acks=all, committed to a database): only then is the
// offset committed. A Permanent error sends the record to quarantine; any
// other error is retried with backoff, and the partition waits.
type Handler func(ctx context.Context, m kafka.Message) error

// Delivery is one record of a batch with the context of its consumer span:
// the record's trace continues from its headers, so work done for it (a
// produce, an INSERT) belongs to its own trace even inside a batch.
type Delivery struct {
	Ctx context.Context
	Msg kafka.Message
}

// BatchHandler handles consecutive records of one partition in offset
// order — or, with ConsumerConfig.Workers, of several partitions of one
// topic (with GatherTopics, of several topics), each partition's in offset
// order. It returns nil when the work of
// every record is durable, or one result per record: nil (done), a
// Permanent error (the record goes to quarantine) or any other error
// (retryable). A partition's records before its first retryable one are
// committed; that one and all of that partition's after it are retried
// together after a backoff (the other partitions' records are done), so
// order is kept and nothing is skipped. A handler that panics on a batch is
// run again record by record, so only the record that panics is quarantined.
type BatchHandler func(ctx context.Context, batch []Delivery) []error

// ConsumerConfig configures a Consumer. Zero values take the stated defaults.
type ConsumerConfig struct {
	Brokers []string
	GroupID string
	Topics  []string
	// Quarantine receives records the handler marks Permanent or panics on.
	// Required: without it a poison record could only block or be dropped.
	Quarantine      *Producer
	QuarantineTopic string
	// SessionTimeout of the group membership (default 10s; kfake and Kafka
	// brokers refuse less than 6s by default).
	SessionTimeout time.Duration
	// CommitInterval batches offset commits (default 200ms). Offsets are only
	// ever handed to the committer after the handler succeeded, so a crash
	// inside the interval replays records, never skips them.
	CommitInterval time.Duration
	// RetryBackoffMax caps the delay between retries of a failing record
	// (default 5s; the first retry waits about 100ms).
	RetryBackoffMax time.Duration
	// DrainTimeout is how long in-flight records may take to finish after
	// shutdown begins (default 10s).
	DrainTimeout time.Duration
	// PartitionQueue is how many fetched records may wait per worker
	// (default 256, at least 2 × MaxBatch).
	PartitionQueue int
	// BufferBytes bounds the fetched records (keys, values, headers) the
	// consumer holds at once — waiting for a worker or in a handler call —
	// over all its workers (default 8 MiB). When it is spent the consumer
	// fetches nothing more until a batch is done; a record larger than the
	// whole budget is still taken, alone. A record count alone did not bound
	// memory: sink-webhook runs a consumer per destination over three topics
	// of six partitions, and a destination behind its rate limit kept up to
	// 18 × 1,000 records waiting. Beside it, each fetch answer being
	// decoded takes up to half the budget (at most 4 MiB; see
	// maxFetchBytes).
	BufferBytes int
	// MaxBatch is the most records of one partition handed to a
	// BatchHandler at once (default 500 for NewBatchConsumer; always 1 for
	// NewConsumer). Batches form naturally: a worker takes what has been
	// fetched and is waiting, never waits for more.
	MaxBatch int
	// Workers is how many workers handle each topic's records (default 0:
	// one per partition). With Workers > 0 a topic's partitions share them:
	// under load partition p's records go to worker p mod Workers, and when
	// every worker of the topic is idle a fetch answer's records all go to
	// one (route.go); a partition changes worker only when none of its
	// records is waiting or in a handler. A worker's batch takes the waiting
	// records of all its partitions — each partition's in offset order — so batches grow
	// with the consumer's rate rather than each partition's: at 1,000
	// events/s over 6 partitions, per-partition batches stayed at 2–5 records
	// and their fixed costs (a produce, a Redis round trip, an INSERT and its
	// commit) dominated. Fewer workers mean bigger batches and less
	// concurrency. Within a batch a failing record holds back only its own
	// partition, but while it is retried (with backoff) its worker takes no
	// new records, so the worker's other partitions wait too: use it where
	// retryable failures are the shared dependency's (Redis, Kafka,
	// PostgreSQL down), not one record's.
	Workers int
	// GatherTopics lets one handler call take records of several topics
	// (with Workers > 0; the handler must accept such batches). When every
	// worker of every topic is idle as a fetch answer is handed over, all of
	// the answer's records go to one worker: at moderate rates an answer is
	// then one batch, not one per topic. Under load each topic's records
	// keep to its own workers, so a batch holds one topic as without it. A
	// sink reads its priority and standard lanes as two topics: live traffic
	// on both was two deliveries (two INSERTs and commits) per answer. A
	// mixed batch's duration and size are recorded under its first record's
	// topic; the records themselves are counted under their own.
	GatherTopics bool
	// Linger is how long the broker may hold a fetch for more records
	// while they keep coming (default 0: a fetch is answered as soon as
	// there is a record). A fetcher lingers when its last answer's records
	// came fast enough to put at least two in a Linger: the next fetch asks
	// the broker to wait until LingerRecords records have arrived (in bytes,
	// at the recent average record size) or Linger has passed (Kafka's
	// fetch.min.bytes and fetch.max.wait.ms), and an answer with
	// fewer records than that rate returns it to the long poll. A record
	// after a quiet spell is not delayed, and at rates that would not fill
	// a batch of two per Linger no record is. Workers take what is waiting.
	// It trades latency for batch size where a batch's fixed cost
	// dominates: at 1,000 records/s a fetch answered at once carries one
	// record, and each answer and each batch costs wake-ups and round trips
	// in every process on the way (docs/benchmarks.md).
	Linger time.Duration
	// LingerRecords is the batch a lingering fetch waits for (default 16):
	// the broker answers once that many records' bytes have arrived, so at
	// rates that fill it sooner a record waits less than Linger, and Linger
	// bounds the wait at rates that do not.
	LingerRecords int
	// LingerSpan (default 0: none) makes a lingering fetch's batch grow
	// with the rate: it waits for LingerRecords records or the bytes that
	// arrive in LingerSpan at the fetcher's recent rate, whichever is more
	// (still at most Linger). With LingerRecords alone a faster stream
	// waits less and its batches stay as small as at the rate that first
	// fills them, so each record carries a whole batch's fixed cost (a
	// fetch, a Redis round trip, a produce or an INSERT, and the wake-ups
	// of each) however fast they come; with a span the wait stays about
	// LingerSpan and the batch is what arrives in it. With a span, a
	// fetcher whose records come in bursts (the batches of a batching stage
	// before it) at a rate too low to bring LingerRecords within Linger asks
	// for half a burst instead and waits up to one and a half Lingers for it:
	// each burst is answered as it lands, rather than anywhere up to a Linger
	// later.
	LingerSpan time.Duration
	// StartFromLatest makes a group with no committed offset (or one out of
	// range: records deleted, a topic recreated) start at the end
	// of the topics instead of the beginning (default false: read everything).
	StartFromLatest bool
	// Log receives consumer events; required.
	Log *slog.Logger
	// Status, when set, gets one ConsumerStats entry per topic.
	Status *status.Registry
}

// Consumer runs a consumer-group loop; see the package documentation.
type Consumer struct {
	cfg    ConsumerConfig
	handle BatchHandler
	group  kafka.ConsumerGroupConfig
	// The fetch path (fetch.go, wire.go): a fetch answer holds at most
	// fetchBytes.
	fetchBytes int
	groupAttr  metric.MeasurementOption
	book       atomic.Pointer[offsetBook] // the current generation's
	tracer     trace.Tracer
	prop       propagation.TextMapPropagator
	stats      map[string]*status.ConsumerStats
	lagMu      sync.Mutex
	lag        map[partKey]int64
	handled    metric.Int64Counter
	retries    metric.Int64Counter
	quar       metric.Int64Counter
	dur        metric.Float64Histogram
	batch      metric.Int64Histogram

	buf budget // the bytes of the records fetched and not yet done

	pauseMu sync.Mutex
	paused  *string       // the reason while paused by hand
	resumed chan struct{} // closed on Resume
}

// NewConsumer validates the configuration; it does not
// join the group until Run. h is called for one record at a time.
func NewConsumer(cfg ConsumerConfig, h Handler) (*Consumer, error) {
	cfg.MaxBatch = 1
	return NewBatchConsumer(cfg, func(_ context.Context, batch []Delivery) []error {
		if err := h(batch[0].Ctx, batch[0].Msg); err != nil {
			return []error{err}
		}
		return nil
	})
}

// NewBatchConsumer is NewConsumer for a handler that takes a partition's
// waiting records together (one Redis round trip and one produce for many
// records instead of one each).
func NewBatchConsumer(cfg ConsumerConfig, h BatchHandler) (*Consumer, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("kafkaio consumer: no brokers")
	case cfg.GroupID == "":
		return nil, errors.New("kafkaio consumer: no group id")
	case len(cfg.Topics) == 0:
		return nil, errors.New("kafkaio consumer: no topics")
	case cfg.Quarantine == nil || cfg.QuarantineTopic == "":
		return nil, errors.New("kafkaio consumer: a quarantine producer and topic are required")
	case cfg.Log == nil:
		return nil, errors.New("kafkaio consumer: no logger")
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = 200 * time.Millisecond
	}
	if cfg.RetryBackoffMax <= 0 {
		cfg.RetryBackoffMax = 5 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.PartitionQueue <= 0 {
		cfg.PartitionQueue = 256
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 500
	}
	cfg.PartitionQueue = max(cfg.PartitionQueue, 2*cfg.MaxBatch)
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	if cfg.LingerRecords <= 0 {
		cfg.LingerRecords = 16
	}
	start := kafka.FirstOffset
	if cfg.StartFromLatest {
		start = kafka.LastOffset
	}
	gc := kafka.ConsumerGroupConfig{
		ID:                cfg.GroupID,
		Brokers:           cfg.Brokers,
		Dialer:            NewDialer(cfg.GroupID),
		Topics:            cfg.Topics,
		SessionTimeout:    cfg.SessionTimeout,
		HeartbeatInterval: cfg.SessionTimeout / 4,
		RebalanceTimeout:  cfg.SessionTimeout,
		JoinGroupBackoff:  500 * time.Millisecond,
		StartOffset:       start,
		Logger: kafka.LoggerFunc(func(msg string, args ...any) {
			if cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
				cfg.Log.Debug("kafka consumer group", "group", cfg.GroupID, "detail", fmt.Sprintf(msg, args...))
			}
		}),
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			// A coordinator request answered late is retried on a new
			// connection and loses nothing: logged at debug.
			if fetchTimedOut(args) {
				cfg.Log.Debug("kafka consumer group: request answered late; reconnecting", "group", cfg.GroupID, "detail", fmt.Sprintf(msg, args...))
				return
			}
			cfg.Log.Warn("kafka consumer group", "group", cfg.GroupID, "detail", fmt.Sprintf(msg, args...))
		}),
	}
	if err := gc.Validate(); err != nil {
		return nil, fmt.Errorf("kafkaio consumer: %w", err)
	}
	meter := otel.Meter(instrumentation)
	c := &Consumer{
		cfg: cfg, handle: h, group: gc,
		fetchBytes: min(max(cfg.BufferBytes/2, 64<<10), maxFetchBytes),
		groupAttr:  metric.WithAttributes(attribute.String("group", cfg.GroupID)),
		tracer:     otel.Tracer(instrumentation), prop: otel.GetTextMapPropagator(),
		stats: map[string]*status.ConsumerStats{}, lag: map[partKey]int64{},
		buf: budget{limit: int64(cfg.BufferBytes)},
	}
	c.handled, _ = meter.Int64Counter("closedloop.consumer.records", metric.WithUnit("{record}"), metric.WithDescription("Records handled successfully."))
	c.retries, _ = meter.Int64Counter("closedloop.consumer.retries", metric.WithUnit("{retry}"), metric.WithDescription("Handler failures that were retried."))
	c.quar, _ = meter.Int64Counter("closedloop.consumer.quarantined", metric.WithUnit("{record}"), metric.WithDescription("Records sent to the quarantine topic."))
	c.dur, _ = meter.Float64Histogram("closedloop.consumer.handle.duration", metric.WithUnit("s"), metric.WithDescription("Time to handle one batch of records (one record for a per-record handler)."),
		metric.WithExplicitBucketBoundaries(telemetry.FastSeconds...))
	c.batch, _ = meter.Int64Histogram("closedloop.consumer.batch.size", metric.WithUnit("{record}"), metric.WithDescription("Records per handler call."),
		metric.WithExplicitBucketBoundaries(telemetry.Records...))
	_, _ = meter.Int64ObservableGauge("closedloop.consumer.buffered", metric.WithUnit("By"),
		metric.WithDescription("Bytes of fetched records waiting for or in a handler call, by group (bounded by CONSUMER_BUFFER_BYTES)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(c.Buffered(), metric.WithAttributes(attribute.String("group", cfg.GroupID)))
			return nil
		}))
	_, _ = meter.Int64ObservableGauge("closedloop.consumer.lag", metric.WithUnit("{record}"),
		metric.WithDescription("Records behind the partition's end as of the last fetch, by group, topic and partition (of the partitions this instance consumes)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for k, n := range c.lagByPartition() {
				o.Observe(n, metric.WithAttributes(attribute.String("topic", k.topic), attribute.String("group", cfg.GroupID),
					attribute.String("partition", strconv.Itoa(k.partition))))
			}
			return nil
		}))
	for _, t := range cfg.Topics {
		s := &status.ConsumerStats{Group: cfg.GroupID, Topic: t}
		c.stats[t] = s
		if cfg.Status != nil {
			cfg.Status.AddConsumer(s)
		}
	}
	return c, nil
}

// Run consumes until ctx is done, then lets in-flight records finish (within
// DrainTimeout), commits what was handled and leaves the group.
func (c *Consumer) Run(ctx context.Context) error {
	// Work that has started is allowed to finish after ctx ends, so that a
	// shutdown does not abort a produce half-way (which would only cause a
	// redelivery, but costs time after every deploy).
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopDrain := context.AfterFunc(ctx, func() {
		time.AfterFunc(c.cfg.DrainTimeout, cancelWork)
	})
	defer stopDrain()

	group, err := kafka.NewConsumerGroup(c.group)
	if err != nil {
		return fmt.Errorf("kafkaio consumer: %w", err)
	}
	failures := 0
	for ctx.Err() == nil {
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			// The coordinator is unreachable: the group reconnects by
			// itself. Wait and ask again; the consumer never gives up on
			// its own (readiness reports it).
			failures++
			c.backOff(ctx, "joining the group failed; retrying", failures, err)
			continue
		}
		failures = 0
		// The generation ends at a rebalance or when ctx ends; either way
		// its records in flight finish and their offsets are committed
		// with it before the next one starts (a rebalance waits for it).
		done := make(chan struct{})
		gen.Start(func(gctx context.Context) {
			defer close(done)
			stop, cancel := context.WithCancel(ctx)
			defer cancel()
			defer context.AfterFunc(gctx, cancel)()
			// At a rebalance every member waits for the slowest to rejoin
			// (up to the rebalance timeout, then it is dropped), so a
			// handler call still running half a session timeout after the
			// generation ended is cancelled: its records are not committed
			// and the partition's next owner handles them. At shutdown the
			// calls get DrainTimeout (workCtx).
			genWork, cancelGenWork := context.WithCancel(workCtx)
			defer cancelGenWork()
			defer context.AfterFunc(gctx, func() {
				if ctx.Err() == nil {
					time.AfterFunc(c.cfg.SessionTimeout/2, cancelGenWork)
				}
			})()
			c.generation(stop, genWork, gen)
		})
		<-done
	}
	if err := group.Close(); err != nil { // leaves the group
		c.cfg.Log.Warn("leaving the consumer group", "group", c.cfg.GroupID, "error", err.Error())
	}
	return nil
}

// workerKey holds the worker's name in the handler's context.
type workerKey struct{}

// WorkerOf names the consumer worker whose handler call ctx belongs to
// ("<topic>/<partition>" for a worker per partition, "<topic>/worker-<n>"
// with ConsumerConfig.Workers); the same name every time the worker calls,
// retries included, and distinct between a consumer's workers. "" outside
// a consumer.
func WorkerOf(ctx context.Context) string {
	s, _ := ctx.Value(workerKey{}).(string)
	return s
}

// worker handles one partition's records in order, in natural batches (or,
// with Workers, the records of its partitions, each partition's in order).
// After stop is done it drops queued records that have not started (they
// were not committed, so they are redelivered to whoever owns the partition
// next).
func (c *Consumer) worker(stop, work context.Context, q <-chan kafka.Message, rt *router) {
	batch := make([]kafka.Message, 0, c.cfg.MaxBatch)
	for m := range q {
		if stop.Err() != nil {
			c.buf.release(recordBytes(m))
			rt.done([]kafka.Message{m})
			continue
		}
		batch = append(batch[:0], m)
	fill:
		for len(batch) < c.cfg.MaxBatch {
			select {
			case m, ok := <-q:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		held := batchBytes(batch)
		if err := c.waitResumed(stop); err != nil {
			c.buf.release(held)
			rt.done(batch)
			continue // stopping: the batch stays uncommitted
		}
		err := c.process(stop, work, batch)
		c.buf.release(held)
		rt.done(batch)
		if err != nil {
			return
		}
	}
}

// Buffered is the bytes of fetched records the consumer holds now (waiting
// for a worker or in a handler call); at most ConsumerConfig.BufferBytes,
// or one record when a single record is larger.
func (c *Consumer) Buffered() int64 { return c.buf.held() }

// DefaultBufferBytes is ConsumerConfig.BufferBytes's default.
const DefaultBufferBytes = 8 << 20

// recordOverhead approximates a kafka.Message's own memory beside its bytes.
const recordOverhead = 256

// recordBytes is what one fetched record counts against the budget.
func recordBytes(m kafka.Message) int64 {
	n := recordOverhead + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value) + 32
	}
	return int64(n)
}

func batchBytes(batch []kafka.Message) int64 {
	var n int64
	for _, m := range batch {
		n += recordBytes(m)
	}
	return n
}

// budget counts bytes against a limit: acquire blocks while the bytes held
// would exceed it (but never when nothing is held, so a record larger than
// the limit passes alone). One goroutine acquires, any releases.
type budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	freed chan struct{} // closed by the next release while acquire waits
}

func (b *budget) acquire(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		if b.freed == nil {
			b.freed = make(chan struct{})
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *budget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	freed := b.freed
	b.freed = nil
	b.mu.Unlock()
	if freed != nil {
		close(freed)
	}
}

// process runs the handler on a batch until every record is done or
// quarantined, committing as it goes. It returns an error only when the
// consumer is stopping and records were left unhandled.
func (c *Consumer) process(stop, work context.Context, batch []kafka.Message) error {
	pending := batch
	for attempt := 1; ; attempt++ {
		topicAttr := metric.WithAttributes(attribute.String("topic", pending[0].Topic), attribute.String("group", c.cfg.GroupID))
		start := time.Now()
		results, panicked := c.handleOnce(work, pending, attempt)
		c.dur.Record(work, time.Since(start).Seconds(), topicAttr)
		c.batch.Record(work, int64(len(pending)), topicAttr)
		if panicked && len(pending) > 1 {
			// Find the record that panics: one at a time from here.
			for i := range pending {
				if err := c.process(stop, work, pending[i:i+1]); err != nil {
					return err
				}
			}
			return nil
		}
		// Records of a partition after its first retryable failure wait
		// for the retry (offset order); everything else is done.
		var done, again []kafka.Message
		var blocked []partKey
		var failure error
		for i, m := range pending {
			k := partKey{m.Topic, m.Partition}
			if slices.Contains(blocked, k) {
				again = append(again, m)
				continue
			}
			var err error
			if results != nil {
				err = results[i]
			}
			if err == nil {
				done = append(done, m)
				continue
			}
			if reason, ok := IsPermanent(err); ok {
				if qerr := c.quarantine(stop, work, m, reason, err); qerr != nil {
					c.commit(work, done)
					return qerr
				}
				done = append(done, m)
				continue
			}
			if failure == nil {
				failure = err
			}
			blocked = append(blocked, k)
			again = append(again, m)
		}
		c.commit(work, done)
		if len(again) == 0 {
			return nil
		}
		pending = again
		c.retries.Add(work, 1, topicAttr)
		if s := c.stats[pending[0].Topic]; s != nil {
			s.Retries.Add(1)
		}
		wait := backoff(attempt, c.cfg.RetryBackoffMax)
		m := pending[0]
		c.cfg.Log.Warn("handler failed; retrying", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
			"records", len(pending), "attempt", attempt, "retry_in", wait.String(), "error", failure.Error())
		select {
		case <-stop.Done():
			return stop.Err()
		case <-time.After(wait):
		}
	}
}

// commit hands the offsets of done records to the generation's book: the
// last of each partition (done holds each partition's records in offset
// order). They are committed every CommitInterval and when the generation
// ends.
func (c *Consumer) commit(ctx context.Context, done []kafka.Message) {
	if len(done) == 0 {
		return
	}
	var lasts []kafka.Message
	perTopic := map[string]int64{}
	for _, m := range done {
		perTopic[m.Topic]++
		i := slices.IndexFunc(lasts, func(l kafka.Message) bool { return l.Topic == m.Topic && l.Partition == m.Partition })
		if i < 0 {
			lasts = append(lasts, m)
		} else {
			lasts[i] = m
		}
	}
	if b := c.book.Load(); b != nil {
		b.add(lasts)
	}
	for topic, n := range perTopic {
		if s := c.stats[topic]; s != nil {
			s.Processed.Add(n)
			s.LastAt.Store(time.Now().UnixNano())
		}
		c.handled.Add(ctx, n, metric.WithAttributes(attribute.String("topic", topic), attribute.String("group", c.cfg.GroupID)))
	}
}

// handleOnce calls the handler with one consumer span per record, each a
// child of the trace context in the record's headers (with spans dropped,
// telemetry.SpansDropped, that trace context itself). results is nil when
// every record is done; panicked reports a handler panic (every record then
// gets a handler_panic Permanent error).
func (c *Consumer) handleOnce(ctx context.Context, batch []kafka.Message, attempt int) (results []error, panicked bool) {
	ds := make([]Delivery, len(batch))
	var spans []trace.Span
	if !telemetry.SpansDropped() {
		spans = make([]trace.Span, len(batch))
	}
	for i := range batch {
		m := &batch[i]
		pctx := c.prop.Extract(ctx, HeaderCarrier{Headers: &m.Headers})
		ds[i].Msg = *m
		if spans == nil {
			// No span would be recorded: the record's own trace context is
			// its handler's.
			ds[i].Ctx = pctx
			continue
		}
		ds[i].Ctx, spans[i] = c.tracer.Start(pctx, "process "+m.Topic, consumerKind)
		// Attributes only for a span that records: with no exporter they
		// were a dozen allocations per record for nobody.
		if spans[i].IsRecording() {
			spans[i].SetAttributes(
				attribute.String("messaging.system", "kafka"),
				attribute.String("messaging.operation.name", "process"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", m.Topic),
				attribute.String("messaging.consumer.group.name", c.cfg.GroupID),
				attribute.String("messaging.destination.partition.id", strconv.Itoa(m.Partition)),
				attribute.Int64("messaging.kafka.offset", m.Offset),
				attribute.String("messaging.kafka.message.key", string(m.Key)),
				attribute.Int("messaging.batch.message_count", len(batch)),
				attribute.Int("closedloop.attempt", attempt),
			)
		}
	}
	defer func() {
		if p := recover(); p != nil {
			m := batch[0]
			c.cfg.Log.ErrorContext(ds[0].Ctx, "handler panicked", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
				"records", len(batch), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			panicked = true
			results = make([]error, len(batch))
			for i := range results {
				results[i] = Permanentf(ReasonHandlerPanic, "handler panicked: %v", p)
			}
		}
		if results != nil && len(results) != len(batch) {
			err := fmt.Errorf("kafkaio: batch handler returned %d results for %d records", len(results), len(batch))
			c.cfg.Log.Error("handler bug; retrying the batch", "error", err.Error())
			results = make([]error, len(batch))
			for i := range results {
				results[i] = err
			}
		}
		for i, span := range spans {
			if results != nil && results[i] != nil {
				span.RecordError(results[i])
				span.SetStatus(codes.Error, results[i].Error())
			}
			span.End()
		}
	}()
	return c.handle(ctx, ds), false
}

var consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)

// backoff is retry.Backoff from 100ms.
func backoff(attempt int, max time.Duration) time.Duration {
	return retry.Backoff(attempt, 100*time.Millisecond, max)
}

// fetchTimeouts counts fetches the broker did not answer within the
// consumer's deadline (the fetch is sent again after a backoff).
var fetchTimeouts, _ = otel.Meter(instrumentation).Int64Counter("closedloop.consumer.fetch_timeouts", metric.WithUnit("{fetch}"),
	metric.WithDescription("Fetches not answered within the consumer's deadline (sent again after a backoff)."))

// fetchTimedOut reports whether a kafka-go error log's arguments carry a
// network timeout (by type, not by message).
func fetchTimedOut(args []any) bool {
	for _, a := range args {
		var ne net.Error
		if err, ok := a.(error); ok && errors.As(err, &ne) && ne.Timeout() {
			return true
		}
	}
	return false
}
