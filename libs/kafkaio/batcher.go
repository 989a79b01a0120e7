package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/telemetry"
)

// Batcher is a producer for many concurrent callers that each wait for
// their own record (the ingress: one record per HTTP request). It batches
// naturally instead of waiting for a timer: each broker has at most
// InFlight produce requests in flight; records that arrive meanwhile — for
// any partition the broker leads — are sent together in the next request as
// soon as one returns. An idle broker gets a record at once (latency of one
// round trip); a busy one gets bigger requests (throughput), one per broker
// rather than one per partition: at 9k records/s over 6 partitions this cut
// the produce requests per second, and the CPU both sides spend on them,
// several times over. Every request is acks=all, the partition is chosen by
// the murmur2 hash of the key (the Java client's partitioner), and a
// partition that fails retriably is sent again (MaxAttempts) before the
// sender takes anything else. Producer is a Batcher with one request in
// flight per broker. The callers send the requests themselves (see lane),
// each sender on connections of its own (wire.go).
type Batcher struct {
	clientID  string
	bootstrap []string
	maxBatch  int
	limit     int
	inFlight  int
	attempts  int
	tracer    trace.Tracer
	prop      propagation.TextMapPropagator
	latency   metric.Float64Histogram
	sizes     metric.Int64Histogram
	requests  metric.Int64Counter

	metaMu  sync.Mutex
	meta    map[string]*topicMeta
	lookups map[string]*metaCall // in progress
	brokers map[int]string       // broker id -> address

	// mu guards lanes and closed; Produce holds it shared while it enqueues
	// so that Close cannot drain a lane under it.
	mu     sync.RWMutex
	lanes  map[int]*lane // leader broker id -> its records
	closed bool
}

// lane is one broker's queued records and its InFlight senders. There is
// no sending goroutine: a caller that queued records takes an idle sender
// and sends what is queued itself — its records and whoever's queued with
// them — writing the request and reading the answer on the sender's
// connection. Handing each call to a sender goroutine and the answer back
// cost two wake-ups per produce request (~30 µs of CPU each on the
// benchmark machine), and at moderate rates every call is a request of its
// own. A caller that finds every sender busy only waits: the busy sender
// looks at the queue again when it is done.
type lane struct {
	q       chan *pending
	senders chan *sender // the idle ones
}

// topicMeta is a topic's partitions and the broker leading each.
type topicMeta struct {
	ids    []int
	leader map[int]int
}

type pending struct {
	tp         partKey
	key, value []byte
	headers    []kafka.Header
	size       int // EncodedSize without the batch header
	done       chan error
}

// pendings recycles the records (and their answer channels) whose callers
// received the answer; one whose caller gave up is left to the collector,
// as the sender may still answer it.
var pendings = sync.Pool{New: func() any { return &pending{done: make(chan error, 1)} }}

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	Brokers []string
	// MaxBatch is the most records in one produce request (default 1000).
	MaxBatch int
	// ClientID names the producer in broker logs (default "closedloop").
	ClientID string
	// InFlight is how many produce requests a broker may have in flight
	// (default 2). Records of one partition may then be written out of the
	// order of the calls — fine for records whose keys are all distinct,
	// such as the ingress's event ids; use 1 to keep call order.
	InFlight int
	// MaxAttempts is how often a partition's records whose produce failed
	// in a way that may pass (a broker's retriable error code — a leader
	// moving, a timeout — or a broken connection) are sent before their
	// callers get the error (default 3; the retries wait 20 ms, then up to
	// 500 ms).
	MaxAttempts int
	// MaxMessageBytes is the topic's max.message.bytes (default
	// DefaultMaxMessageBytes): a produce request's batch for a partition
	// never exceeds it, so large records cannot make the small ones sent
	// with them fail, and a record that cannot fit fails alone at once.
	MaxMessageBytes int
}

// maxRequestBytes bounds a whole produce request (every partition's batch),
// well under the brokers' socket.request.max.bytes (100 MiB by default).
const maxRequestBytes = 16 << 20

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
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.MaxMessageBytes <= batchOverhead {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	meter := otel.Meter(instrumentation)
	b := &Batcher{
		clientID:  cfg.ClientID,
		bootstrap: cfg.Brokers,
		maxBatch:  cfg.MaxBatch,
		limit:     cfg.MaxMessageBytes,
		inFlight:  cfg.InFlight,
		attempts:  cfg.MaxAttempts,
		tracer:    otel.Tracer(instrumentation),
		prop:      otel.GetTextMapPropagator(),
		meta:      map[string]*topicMeta{},
		brokers:   map[int]string{},
		lookups:   map[string]*metaCall{},
		lanes:     map[int]*lane{},
	}
	b.latency, _ = meter.Float64Histogram("closedloop.kafka.produce.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from produce call to acknowledgement by all in-sync replicas."),
		metric.WithExplicitBucketBoundaries(telemetry.FastSeconds...))
	b.sizes, _ = meter.Int64Histogram("closedloop.kafka.produce.batch.size", metric.WithUnit("{record}"), metric.WithDescription("Records per produce request (all partitions of one broker)."),
		metric.WithExplicitBucketBoundaries(telemetry.Records...))
	b.requests, _ = meter.Int64Counter("closedloop.kafka.produce.requests", metric.WithUnit("{request}"), metric.WithDescription("Produce requests sent (one per broker at a time, every partition's records together)."))
	return b
}

// ErrClosed is returned by Produce after Close.
var ErrClosed = errors.New("kafkaio: producer closed")

// Produce writes the records and returns once every one was acknowledged
// by all in-sync replicas, or with the first error. It honours ctx: a caller
// whose deadline passes gets ctx's error (the record may still be written).
func (b *Batcher) Produce(ctx context.Context, recs ...Record) error {
	if len(recs) == 1 {
		// The ingress's case: one record per call, no slices.
		start := time.Now()
		p, l, span, err := b.submit(ctx, recs[0])
		if err == nil {
			b.kick(l, 1)
			err = b.wait(ctx, recs[0].Topic, p)
		}
		endSpan(span, err)
		b.latency.Record(ctx, time.Since(start).Seconds())
		return err
	}
	for _, err := range b.ProduceEach(ctx, recs...) {
		if err != nil {
			return err
		}
	}
	return nil
}

// ProduceEach is Produce with one result per record: nil when every record
// was acknowledged, else errs[i] is recs[i]'s error (nil for the records
// written). A record too large fails alone; a topic that cannot be looked
// up fails the call's records for it. It does not retry (Producer does).
func (b *Batcher) ProduceEach(ctx context.Context, recs ...Record) []error {
	start := time.Now()
	waits := make([]*pending, len(recs))
	spans := make([]trace.Span, len(recs))
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(recs))
		}
		errs[i] = err
	}
	var unknown map[string]error // topics whose lookup failed in this call
	var lanes []*lane
	for i, r := range recs {
		if err := unknown[r.Topic]; err != nil {
			fail(i, err)
			continue
		}
		p, l, span, err := b.submit(ctx, r)
		if l != nil && !slices.Contains(lanes, l) {
			lanes = append(lanes, l)
		}
		spans[i] = span
		if err != nil {
			fail(i, err)
			if !errors.Is(err, ErrRecordTooLarge) {
				if unknown == nil {
					unknown = map[string]error{}
				}
				unknown[r.Topic] = err
			}
			continue
		}
		waits[i] = p
	}
	// The brokers' requests go out at the same time: this goroutine sends
	// one, helpers the others.
	for i, l := range lanes {
		if i < len(lanes)-1 {
			go b.kick(l, 1)
		} else {
			b.kick(l, 1)
		}
	}
	for i, p := range waits {
		if p != nil {
			if err := b.wait(ctx, recs[i].Topic, p); err != nil {
				fail(i, err)
			}
		}
	}
	for i, s := range spans {
		var err error
		if errs != nil {
			err = errs[i]
		}
		endSpan(s, err)
	}
	b.latency.Record(ctx, time.Since(start).Seconds())
	return errs
}

// recycle returns p, answered or never queued, to the pool.
func (p *pending) recycle() {
	p.key, p.value, p.headers = nil, nil, nil
	pendings.Put(p)
}

// submit starts r's publish span and queues it in its broker's lane (to
// be sent by kick).
func (b *Batcher) submit(ctx context.Context, r Record) (*pending, *lane, trace.Span, error) {
	headers, span := startPublish(ctx, b.tracer, b.prop, r)
	size := EncodedSize(r.Key, r.Value, headers)
	if size > b.limit {
		return nil, nil, span, fmt.Errorf("produce to %s: %w", r.Topic, tooLarge(r.Topic, size, b.limit))
	}
	p := pendings.Get().(*pending)
	p.key, p.value, p.headers, p.size = r.Key, r.Value, headers, size-batchOverhead
	l, err := b.enqueue(ctx, r.Topic, p)
	if err != nil {
		p.recycle()
		return nil, nil, span, err
	}
	return p, l, span, nil
}

func (b *Batcher) wait(ctx context.Context, topic string, p *pending) error {
	var err error
	select {
	case err = <-p.done:
		p.recycle()
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}
	return nil
}

func endSpan(s trace.Span, err error) {
	if s == nil {
		return
	}
	if err != nil {
		s.RecordError(err)
		s.SetStatus(codes.Error, err.Error())
	}
	s.End()
}

// enqueue queues p in the lane of the broker leading the key's partition.
// A full lane is sent from first (by this caller, unless every sender is
// busy: they drain it).
func (b *Batcher) enqueue(ctx context.Context, topic string, p *pending) (*lane, error) {
	m, err := b.topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	part := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: p.key}, m.ids...)
	p.tp = partKey{topic, part}
	leader, ok := m.leader[part]
	if !ok { // being elected: look again next time
		b.metaMu.Lock()
		delete(b.meta, topic)
		b.metaMu.Unlock()
		return nil, fmt.Errorf("partition %d of %s: %w", part, topic, kafka.LeaderNotAvailable)
	}
	b.mu.RLock()
	l, ok := b.lanes[leader]
	b.mu.RUnlock()
	if !ok {
		b.mu.Lock()
		if l, ok = b.lanes[leader]; !ok && !b.closed {
			l = &lane{q: make(chan *pending, 4*b.maxBatch), senders: make(chan *sender, b.inFlight)}
			for range b.inFlight {
				l.senders <- &sender{b: b, home: leader, conns: map[int]*brokerConn{}}
			}
			b.lanes[leader] = l
		}
		b.mu.Unlock()
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return nil, ErrClosed
	}
	select {
	case l.q <- p:
		b.mu.RUnlock()
		return l, nil
	default:
	}
	b.mu.RUnlock()
	b.kick(l, 1) // not under mu: it sends
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	select {
	case l.q <- p:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// kick sends what l has queued if a sender is idle: up to rounds requests
// from this goroutine; what is still queued then goes on in another. When
// every sender is busy it returns at once: a sender looks at the queue
// again after putting itself back, so a record queued before kick is
// always sent.
func (b *Batcher) kick(l *lane, rounds int) {
	for {
		var s *sender
		select {
		case s = <-l.senders:
		default:
			return
		}
		for ; rounds > 0 && s.round(l.q); rounds-- {
		}
		more := s.carry != nil
		l.senders <- s
		if !more && len(l.q) == 0 {
			return
		}
		if rounds == 0 {
			go b.kick(l, 8)
			return
		}
	}
}

// topic returns the topic's partitions and their leaders, from metadata on
// first use and after a failed request. Callers missing the same topic at
// once share one lookup (at 20k requests/s, a broker outage must not
// become a storm of connections to the brokers coming back).
func (b *Batcher) topic(ctx context.Context, topic string) (*topicMeta, error) {
	b.metaMu.Lock()
	if m, ok := b.meta[topic]; ok {
		b.metaMu.Unlock()
		return m, nil
	}
	call, ok := b.lookups[topic]
	if !ok {
		call = &metaCall{done: make(chan struct{})}
		b.lookups[topic] = call
		go func() {
			lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := b.lookupTopic(lctx, topic)
			b.metaMu.Lock()
			call.m, call.err = m, err
			if err == nil {
				b.meta[topic] = m
			}
			delete(b.lookups, topic)
			b.metaMu.Unlock()
			close(call.done)
		}()
	}
	b.metaMu.Unlock()
	select {
	case <-call.done:
		return call.m, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// metaCall is a topic's lookup in progress.
type metaCall struct {
	done chan struct{}
	m    *topicMeta
	err  error
}

// lookupTopic asks the brokers for topic's partitions and leaders.
func (b *Batcher) lookupTopic(ctx context.Context, topic string) (*topicMeta, error) {
	md, err := lookup(ctx, b.bootstrap, b.clientID, []string{topic})
	if err != nil {
		return nil, err
	}
	leaders := leaderAddrs(md)
	m := &topicMeta{leader: map[int]int{}}
	b.metaMu.Lock()
	defer b.metaMu.Unlock()
	for _, t := range md.Topics {
		if t.Name == topic && t.ErrorCode == 0 {
			for _, p := range t.Partitions {
				id := int(p.PartitionIndex)
				m.ids = append(m.ids, id) // every partition: the key's hash must not depend on leaders
				if l, ok := leaders[partKey{topic, id}]; ok {
					m.leader[id] = l.id
					b.brokers[l.id] = l.addr
				}
			}
		}
	}
	slices.Sort(m.ids)
	if len(m.ids) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions (does it exist?)", topic)
	}
	return m, nil
}

// sender is one request in flight to a lane's broker: its connections (to
// that broker, and to another while a partition it was sent for has moved
// there) and the record that did not fit its last request.
type sender struct {
	b     *Batcher
	home  int
	conns map[int]*brokerConn
	carry *pending
	batch []*pending
	bytes map[partKey]int
}

// round takes what is queued (the carried record first) up to MaxBatch
// records and sends it as one request with a batch per partition; false
// when there was nothing. A record that would take its partition's batch
// past MaxMessageBytes, or the request past maxRequestBytes, is carried to
// the next request.
func (s *sender) round(q chan *pending) bool {
	b := s.b
	s.batch = s.batch[:0]
	if s.bytes == nil {
		s.bytes = map[partKey]int{}
	}
	clear(s.bytes)
	total := 0
	// fits reports whether p can join the request (an empty one takes any
	// record: a record larger than the limit failed in Produce).
	fits := func(p *pending) bool {
		n := max(s.bytes[p.tp], batchOverhead)
		return len(s.batch) == 0 || (n+p.size <= b.limit && total+p.size+batchOverhead <= maxRequestBytes)
	}
	take := func(p *pending) {
		s.bytes[p.tp] = max(s.bytes[p.tp], batchOverhead) + p.size
		total += p.size + batchOverhead
		s.batch = append(s.batch, p)
	}
	if s.carry != nil {
		take(s.carry)
		s.carry = nil
	}
fill:
	for len(s.batch) < b.maxBatch {
		select {
		case p := <-q:
			if !fits(p) {
				s.carry = p
				break fill
			}
			take(p)
		default:
			break fill
		}
	}
	if len(s.batch) == 0 {
		return false
	}
	s.write(s.batch)
	clear(s.batch) // the answered records go back to their callers' pool
	return true
}

func (s *sender) close() {
	for _, c := range s.conns {
		c.Close()
	}
}

// part is one partition's records of a produce request, in call order.
type part struct {
	tp  partKey
	who []*pending
}

// write sends batch as one produce request and answers each record's
// caller. A partition that failed in a way that may pass (a retriable
// error code such as a moved leader, or a broken connection) is sent again
// after a backoff, up to MaxAttempts, before anything behind it in this
// sender: with one request in flight, a partition's records stay in order.
func (s *sender) write(batch []*pending) {
	// Group by partition, keeping each partition's records in call order.
	var parts []*part
	index := map[partKey]*part{}
	for _, p := range batch {
		g := index[p.tp]
		if g == nil {
			g = &part{tp: p.tp}
			index[p.tp] = g
			parts = append(parts, g)
		}
		g.who = append(g.who, p)
	}
	for attempt := 1; ; attempt++ {
		parts = s.attempt(parts, attempt)
		if len(parts) == 0 {
			return
		}
		time.Sleep(retry.Backoff(attempt, 20*time.Millisecond, 500*time.Millisecond))
	}
}

// produceTimeout is how long the brokers may take to have a request's
// records on every in-sync replica.
const produceTimeout = 10 * time.Second

// attempt sends parts — normally one request, to the sender's broker; after a
// leader moved, one per broker leading them now — answers the records that
// are done (written, or failed for good) and returns the parts to send
// again.
func (s *sender) attempt(parts []*part, attempt int) (again []*part) {
	b := s.b
	ctx := context.Background()
	byLeader := map[int][]*part{}
	var leaders []int
	errs := map[*part]error{}
	for _, g := range parts {
		id := s.home
		if attempt > 1 { // where the partition is now
			m, err := b.topic(ctx, g.tp.topic)
			if err != nil {
				errs[g] = err
				continue
			}
			if l, ok := m.leader[g.tp.partition]; ok {
				id = l
			}
		}
		if _, ok := byLeader[id]; !ok {
			leaders = append(leaders, id)
		}
		byLeader[id] = append(byLeader[id], g)
	}
	var throttle int32
	results := map[partKey]produceResult{}
	for _, id := range leaders {
		gs := byLeader[id]
		res, t, err := s.produce(ctx, id, gs)
		throttle = max(throttle, t)
		for _, g := range gs {
			if err != nil {
				errs[g] = err
			} else if r, ok := res[g.tp]; ok {
				results[g.tp] = r
			} else {
				errs[g] = fmt.Errorf("partition %d of %s missing from the produce answer", g.tp.partition, g.tp.topic)
			}
		}
	}
	// Answered now, but this sender's next request waits the quota's delay
	// (KIP-219).
	defer throttled(ctx, throttle)
	stale := false
	for _, g := range parts {
		perr := errs[g]
		res := results[g.tp]
		if perr == nil && res.errorCode != 0 {
			perr = kafka.Error(res.errorCode)
			if res.errorMessage != "" {
				perr = fmt.Errorf("%w (%s)", perr, res.errorMessage)
			}
		}
		if errors.Is(perr, kafka.MessageSizeTooLarge) {
			// The topic's limit is below ours: send the records one by one
			// so that only a record that alone does not fit fails.
			if len(g.who) > 1 {
				for _, p := range g.who {
					s.write([]*pending{p})
				}
				continue
			}
			perr = tooLarge(g.tp.topic, g.who[0].size+batchOverhead, 0)
		}
		if perr != nil {
			stale = true
			if attempt < b.attempts && retriable(perr) {
				again = append(again, g)
				continue
			}
		}
		for i, p := range g.who {
			e := perr
			if msg, ok := res.recordErrors[int32(i)]; ok && e == nil {
				e = errors.New(msg)
			}
			p.done <- e
		}
	}
	if stale {
		// A partition may have moved or the topic changed: look it up again.
		b.metaMu.Lock()
		for _, g := range parts {
			delete(b.meta, g.tp.topic)
		}
		b.metaMu.Unlock()
	}
	return again
}

// produce sends the parts to broker id as one request on the sender's
// connection to it (dialled when missing, dropped when it fails).
func (s *sender) produce(ctx context.Context, id int, parts []*part) (map[partKey]produceResult, int32, error) {
	c := s.conns[id]
	if c == nil {
		s.b.metaMu.Lock()
		addr, ok := s.b.brokers[id]
		s.b.metaMu.Unlock()
		if !ok {
			return nil, 0, fmt.Errorf("broker %d: address unknown", id)
		}
		var err error
		if c, err = dialBroker(ctx, addr, s.b.clientID); err != nil {
			return nil, 0, err
		}
		s.conns[id] = c
	}
	batches := make([]produceBatch, len(parts))
	records := 0
	for i, g := range parts {
		batches[i] = produceBatch{topic: g.tp.topic, partition: int32(g.tp.partition), recs: g.who}
		records += len(g.who)
	}
	s.b.sizes.Record(ctx, int64(records))
	s.b.requests.Add(ctx, 1)
	res, throttle, err := c.produce(ctx, batches, produceTimeout)
	if err != nil {
		c.Close()
		delete(s.conns, id)
	}
	return res, throttle, err
}

// retriable reports whether a produce error may pass on another attempt: a
// broker's error code it marks temporary, or a connection that failed. A
// record too large or a missing partition does not.
func retriable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrRecordTooLarge) {
		return false
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// Close sends what is queued, waits for the requests in flight and closes
// the connections; Produce fails with ErrClosed afterwards.
func (b *Batcher) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	lanes := b.lanes
	b.mu.Unlock()
	for _, l := range lanes {
		senders := make([]*sender, b.inFlight)
		for i := range senders {
			senders[i] = <-l.senders // each once its request is answered
		}
		for _, s := range senders {
			for s.round(l.q) {
			}
			s.close()
		}
	}
	return nil
}
