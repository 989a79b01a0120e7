package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// The consumer's fetch path. kafka-go's Reader fetches each partition with
// its own request on its own connection and hands records over one at a
// time through channels: at 1,000 events/s over six partitions a stage sent
// ~950 fetch requests per second, each a wake-up, a round trip and a
// response to decode on both sides, and spent a fifth of its CPU there.
// Here the group membership is kafka-go's ConsumerGroup, and each broker
// gets one fetch at a time for every assigned partition it leads; the
// broker answers as soon as any of them has records, so one answer carries
// what arrived on all of them.

// fetchMaxWait is how long the broker may hold a fetch that finds nothing.
// At 500 ms an idle sink-webhook (a consumer per destination, each
// fetching three topics) used 1.7 % of a core and the broker 3 % answering
// empty fetches; at 2 s, 0.8 % and 1.5 %, with the same latency at 100/s
// (the broker answers as soon as a record arrives).
const fetchMaxWait = 2 * time.Second

// lingerBytes caps the bytes a lingering fetch waits for, whatever
// LingerRecords and the record size make (it also waits at most Linger).
const lingerBytes = 256 << 10

// lingerMinBytes is the fetch.min.bytes of a lingering fetch: LingerRecords
// records at avg bytes each, or the bytes that arrive in LingerSpan at rate
// bytes per second if more, within [1, lingerBytes] and the fetch budget.
func lingerMinBytes(records int, avg float64, span time.Duration, rate float64, budget int) int32 {
	n := min(max(avg*float64(records), rate*span.Seconds()), lingerBytes) // capped before int: the rate has no bound
	return int32(max(1, min(int(n), budget)))
}

// arrivals estimates the bytes per second a fetcher's partitions receive,
// from the answers of its lingering fetches: each answer's bytes over the
// time since the previous answer with records, both averaged over the
// recent answers (the ratio of the averages, which a few short intervals
// cannot inflate as an average of ratios would). An answer that waited
// for its batch measures the arrivals during that wait; one that came at
// once after a slow handover measures them during the handover. Read
// while a consumer catches up on a backlog, it is the rate the records
// were read at, not the rate they arrive at: the fetch loop starts it
// again from the first answer that waited out the whole linger.
type arrivals struct {
	bytes, secs float64 // moving averages per answer
}

func (a *arrivals) add(bytes int, d time.Duration) {
	if d <= 0 {
		return
	}
	if a.secs == 0 {
		a.bytes, a.secs = float64(bytes), d.Seconds()
		return
	}
	a.bytes += (float64(bytes) - a.bytes) / 8
	a.secs += (d.Seconds() - a.secs) / 8
}

// rate is the bytes per second, 0 before any answer.
func (a *arrivals) rate() float64 {
	if a.secs == 0 {
		return 0
	}
	return a.bytes / a.secs
}

// bursts tells a fetcher whose records come in bursts — a stage after
// another batching stage, which produces each batch at once, every linger
// or so at moderate rates — from one whose records come one by one. Below
// the rate that fills LingerRecords within the linger, every lingering
// fetch waits out its whole linger; fed in bursts, it then answers a burst
// anywhere from at once to a whole linger after it landed, depending only
// on how the two stages' lingers line up. Once the input is seen to come in
// bursts, at such rates a lingering fetch asks for half a burst's bytes,
// so it is answered when the next burst lands, with the same batch. It
// waits up to one and a half lingers for it (the bursts come about a
// linger of the stage before apart): a burst under half the usual size
// waits that long at most.
//
// An answer shows a burst when its records were all produced within an
// eighth of the time the fetch waited: a steady stream's records spread
// over the whole wait. Answers that came within burstMinWait say nothing
// (the records were there already), and answers of one record or of
// records without timestamps neither.
type bursts struct {
	bytes float64 // moving average of a burst's bytes; 0: not bursty
}

// burstMinWait is the shortest wait of a lingering fetch whose answer can
// tell a burst (record timestamps are in milliseconds).
const burstMinWait = 8 * time.Millisecond

func (b *bursts) observe(records, size int, spread, waited time.Duration) {
	if records < 2 || waited < burstMinWait {
		return
	}
	if spread*8 > waited {
		b.bytes = 0
		return
	}
	if b.bytes == 0 {
		b.bytes = float64(size)
	} else {
		b.bytes += (float64(size) - b.bytes) / 4
	}
}

// minBytes is half a burst, and ok, when the records come in bursts,
// that is less than target (a lingering fetch's fetch.min.bytes), and
// target would not arrive within the linger at rate bytes per second (0:
// unknown). At rates that bring target in time the fetch already answers
// with it.
func (b *bursts) minBytes(target int32, rate float64, linger time.Duration) (int32, bool) {
	if half := int32(b.bytes / 2); b.bytes > 0 && half < target && rate > 0 && rate*linger.Seconds() < float64(target) {
		return max(half, 1), true
	}
	return target, false
}

// A fetch answer is read whole into its connection's buffer (reused from
// fetch to fetch) and its records copied out before any is handed over, so
// a fetcher holds an answer's bytes about twice while it hands them over.
// The answer is half the consumer's budget, at most maxFetchBytes, and
// maxPartitionFetchBytes per partition (a larger first batch still comes
// whole). Measured with every destination (sink-webhook: four consumers of
// 2 MiB budgets; docs/benchmarks.md): kafka-go's Reader peaked at 144 MiB
// RSS; kafka-go's generic decoder (64 KiB pages per record batch) at 184
// with these sizes and 283–295 with whole-budget answers; this reader at
// 157. Smaller answers starved a saturated normalizer: 1 MiB answers of 256
// KiB per partition gave 0.17 × its passthrough instead of 0.22–0.24 ×.
const (
	maxFetchBytes          = 4 << 20
	maxPartitionFetchBytes = 1 << 20
)

// partState is one assigned partition: the next offset to hand over.
type partState struct {
	key  partKey
	next int64 // negative (the group's start offset) until resolved
}

// generation consumes the partitions gen assigns until stop is done (the
// consumer stops or the group rebalances): workers for them, a fetcher per
// leading broker, offsets committed every CommitInterval and once more
// when the workers are done.
func (c *Consumer) generation(stop, work context.Context, gen *kafka.Generation) {
	var parts []*partState
	for topic, as := range gen.Assignments {
		for _, a := range as {
			parts = append(parts, &partState{key: partKey{topic, a.ID}, next: a.Offset})
		}
	}
	c.assigned(parts)
	c.cfg.Log.Info("partitions assigned", "group", c.cfg.GroupID, "generation", gen.ID, "partitions", len(parts))
	if len(parts) == 0 {
		<-stop.Done()
		return
	}
	book := &offsetBook{gen: gen}
	c.book.Store(book)
	queues := map[partKey]chan kafka.Message{}
	var keys []partKey
	for _, p := range parts {
		wk := c.workerOf(p.key)
		if _, ok := queues[wk]; !ok {
			queues[wk] = make(chan kafka.Message, c.cfg.PartitionQueue)
			keys = append(keys, wk)
		}
	}
	var rt *router // nil: each partition has its own worker
	if c.cfg.Workers > 0 {
		rt = newRouter(c.workerOf, keys, c.cfg.GatherTopics)
	}
	var wg sync.WaitGroup
	for _, wk := range keys {
		q := queues[wk]
		wctx := context.WithValue(work, workerKey{}, c.workerName(wk))
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.worker(stop, wctx, q, rt)
		}()
	}
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		t := time.NewTicker(c.cfg.CommitInterval)
		defer t.Stop()
		for {
			select {
			case <-stop.Done():
				return
			case <-t.C:
				c.flush(book)
			}
		}
	}()
	c.fetchAll(stop, parts, queues, rt)
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	// A worker that gave up on a batch (stopping while it was retried)
	// left its queue: those records' bytes go back to the budget, which
	// outlives the generation.
	for _, q := range queues {
		for m := range q {
			c.buf.release(recordBytes(m))
		}
	}
	<-committed
	c.flush(book)
}

// workerOf is the worker serving partition k: its own, or with Workers one
// of its topic's (its home: only with GatherTopics, and only when every
// worker is idle, does a batch mix topics).
func (c *Consumer) workerOf(k partKey) partKey {
	if c.cfg.Workers > 0 {
		return partKey{k.topic, k.partition % c.cfg.Workers}
	}
	return k
}

func (c *Consumer) workerName(wk partKey) string {
	if c.cfg.Workers > 0 {
		return fmt.Sprintf("%s/worker-%d", wk.topic, wk.partition)
	}
	return fmt.Sprintf("%s/%d", wk.topic, wk.partition)
}

// fetchAll runs a fetcher per broker leading some of parts until stop is
// done; when one fails (a leader moved, a broker is unreachable) all stop,
// and after a backoff the leaders are looked up again.
func (c *Consumer) fetchAll(stop context.Context, parts []*partState, queues map[partKey]chan kafka.Message, rt *router) {
	failures := 0
	for stop.Err() == nil {
		byLeader, err := c.leaders(stop, parts)
		var progressed bool
		if err == nil {
			fctx, cancel := context.WithCancel(stop)
			var mu sync.Mutex
			var fwg sync.WaitGroup
			for _, l := range byLeader {
				fwg.Add(1)
				go func() {
					defer fwg.Done()
					ok, ferr := c.fetchLoop(fctx, l.addr, l.parts, queues, rt)
					mu.Lock()
					progressed = progressed || ok
					if ferr != nil && err == nil {
						err = ferr
					}
					mu.Unlock()
					if ferr != nil {
						cancel()
					}
				}()
			}
			fwg.Wait()
			cancel()
		}
		if stop.Err() != nil {
			return
		}
		if progressed {
			if failures > 0 {
				c.cfg.Log.Info("fetching again", "group", c.cfg.GroupID, "after_failures", failures)
			}
			failures = 0
		}
		if err == nil {
			continue
		}
		// The broker is unreachable, a leader moved, or the group is
		// rebalancing: wait and look again. The consumer never gives up
		// on its own (readiness reports it).
		failures++
		c.backOff(stop, "fetch failed; retrying", failures, err)
	}
}

// backOff logs the failures-th failure in a row (the first and every
// 20th) and waits its backoff, or until ctx ends.
func (c *Consumer) backOff(ctx context.Context, msg string, failures int, err error) {
	wait := backoff(failures, c.cfg.RetryBackoffMax)
	if failures == 1 || failures%20 == 0 {
		c.cfg.Log.Warn(msg, "group", c.cfg.GroupID, "failures", failures, "retry_in", wait.String(), "error", err.Error())
	}
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
}

// led is the partitions one broker leads, and its address.
type led struct {
	addr  string
	parts []*partState
}

// leaders groups the partitions by the broker leading each.
func (c *Consumer) leaders(ctx context.Context, parts []*partState) (map[int]*led, error) {
	var topics []string
	for _, p := range parts {
		if !slices.Contains(topics, p.key.topic) {
			topics = append(topics, p.key.topic)
		}
	}
	md, err := lookup(ctx, c.cfg.Brokers, c.cfg.GroupID, topics)
	if err != nil {
		return nil, err
	}
	leader := leaderAddrs(md)
	out := map[int]*led{}
	for _, p := range parts {
		b, ok := leader[p.key]
		if !ok {
			return nil, fmt.Errorf("partition %d of %s has no leader", p.key.partition, p.key.topic)
		}
		l := out[b.id]
		if l == nil {
			l = &led{addr: b.addr}
			out[b.id] = l
		}
		l.parts = append(l.parts, p)
	}
	return out, nil
}

// resolve sets the next offset of parts, all led by conn's broker, from the
// partitions' ends: a partition with no committed offset, or whose offset
// is out of range (its records deleted by retention, or the topic recreated
// or truncated), starts at its first offset — or, with StartFromLatest, at
// its end. Going back may repeat records (the stages dedupe); going forward
// could lose records never seen.
func (c *Consumer) resolve(ctx context.Context, conn *brokerConn, parts []*partState, outOfRange bool) error {
	keys := make([]partKey, len(parts))
	for i, p := range parts {
		keys[i] = p.key
	}
	// One request per end needed (ListOffsets asks one time per
	// partition): the start, the end, or both to log an out-of-range move.
	var first, end map[partKey]int64
	var err error
	if !c.cfg.StartFromLatest || outOfRange {
		if first, err = conn.listOffsets(ctx, keys, -2); err != nil {
			return fmt.Errorf("list offsets: %w", err)
		}
	}
	if c.cfg.StartFromLatest || outOfRange {
		if end, err = conn.listOffsets(ctx, keys, -1); err != nil {
			return fmt.Errorf("list offsets: %w", err)
		}
	}
	for _, p := range parts {
		was := p.next
		p.next = first[p.key]
		if c.cfg.StartFromLatest {
			p.next = end[p.key]
		}
		if outOfRange {
			c.cfg.Log.Warn("offset out of range; moved", "group", c.cfg.GroupID, "topic", p.key.topic, "partition", p.key.partition,
				"from", was, "to", p.next, "first", first[p.key], "end", end[p.key])
		}
	}
	return nil
}

// fetchLoop fetches parts, all led by the broker at addr, with one request
// at a time on its own connection (first resolving, on it, where the
// partitions without a committed offset start) and hands their records to
// the workers in offset order, until ctx is done (nil) or a fetch fails.
// progressed reports a fetch answered.
func (c *Consumer) fetchLoop(ctx context.Context, addr string, parts []*partState, queues map[partKey]chan kafka.Message, rt *router) (progressed bool, err error) {
	conn, err := dialBroker(ctx, addr, c.cfg.GroupID)
	if err != nil {
		return false, fmt.Errorf("fetch: %w", err)
	}
	defer conn.Close()
	var unresolved []*partState // no committed offset: start from an end
	for _, p := range parts {
		if p.next < 0 {
			unresolved = append(unresolved, p)
		}
	}
	if len(unresolved) > 0 {
		if err := c.resolve(ctx, conn, unresolved, false); err != nil {
			return false, err
		}
	}
	// The request's shape is fixed for the loop; only the offsets change.
	req := &fetchRequest{maxWait: int32(fetchMaxWait / time.Millisecond), maxBytes: int32(c.fetchBytes)}
	var at [][]*partState // the request's partitions, by topic and position
	index := make(map[partKey]*partState, len(parts))
	for _, p := range parts {
		index[p.key] = p
		i := slices.IndexFunc(req.topics, func(t fetchTopic) bool { return t.name == p.key.topic })
		if i < 0 {
			i = len(req.topics)
			req.topics = append(req.topics, fetchTopic{name: p.key.topic})
			at = append(at, nil)
		}
		req.topics[i].parts = append(req.topics[i].parts, fetchPart{partition: int32(p.key.partition), maxBytes: int32(min(c.fetchBytes, maxPartitionFetchBytes))})
		at[i] = append(at[i], p)
	}
	type got struct {
		p    *partState
		hw   int64
		end  int64
		msgs []kafka.Message
	}
	var (
		answers   []fetchAnswer
		gots      []got
		lingering bool
		avgBytes  float64                // recent bytes per record, as fetched
		arrived   arrivals               // recent bytes per second, while lingering
		lastData  time.Time              // when the last answer with records came
		bursts    bursts                 // whether the records come in bursts, and their size
		gather    = map[string]partKey{} // this answer's worker per topic (router)
	)
	for ctx.Err() == nil {
		if lingering {
			target := lingerMinBytes(c.cfg.LingerRecords, avgBytes, c.cfg.LingerSpan, arrived.rate(), c.fetchBytes)
			wait := c.cfg.Linger
			if mb, ok := bursts.minBytes(target, arrived.rate(), c.cfg.Linger); ok {
				// The next burst comes about a linger of the stage before
				// after the last one: wait past it, so that the fetch is
				// still there when it lands rather than answered empty
				// just before (a round trip more per burst).
				target, wait = mb, c.cfg.Linger*3/2
			}
			req.maxWait, req.minBytes = int32(max(wait/time.Millisecond, 1)), target
		} else {
			req.maxWait, req.minBytes = int32(fetchMaxWait/time.Millisecond), 1
		}
		for ti := range req.topics {
			for pi := range req.topics[ti].parts {
				req.topics[ti].parts[pi].offset = at[ti][pi].next
			}
		}
		fetchRequests.Add(ctx, 1, c.groupAttr)
		sentAt := time.Now()
		var throttle int32
		answers, throttle, err = conn.fetch(ctx, req, fetchMaxWait+5*time.Second, answers[:0])
		if ctx.Err() != nil {
			return progressed, nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				fetchTimeouts.Add(ctx, 1, c.groupAttr)
			}
			return progressed, fmt.Errorf("fetch: %w", err)
		}
		progressed = true
		// Every record is copied out of the answer before any is handed
		// over: the connection's buffer is the next answer's.
		gots, n, size := gots[:0], 0, 0
		var first, last time.Time // the answer's records' timestamps
		for _, a := range answers {
			p := index[partKey{a.topic, int(a.partition)}]
			if p == nil {
				continue
			}
			if a.errorCode != 0 {
				if perr := kafka.Error(a.errorCode); perr == kafka.OffsetOutOfRange {
					if err := c.resolve(ctx, conn, []*partState{p}, true); err != nil {
						return progressed, err
					}
					continue
				}
				return progressed, fmt.Errorf("fetch %s/%d: %w", a.topic, a.partition, kafka.Error(a.errorCode))
			}
			msgs, end, err := conn.readRecords(nil, p.key.topic, p.key.partition, a.highWatermark, p.next, a.records)
			if err != nil {
				return progressed, fmt.Errorf("fetch %s/%d: %w", a.topic, a.partition, err)
			}
			gots = append(gots, got{p, a.highWatermark, end, msgs})
			n += len(msgs)
			size += len(a.records)
			for _, m := range msgs {
				if first.IsZero() || m.Time.Before(first) {
					first = m.Time
				}
				if m.Time.After(last) {
					last = m.Time
				}
			}
		}
		// Linger while the records come fast enough to put two in a
		// Linger (ConsumerConfig.Linger).
		now := time.Now()
		waited := lingering && size < int(req.minBytes) // the linger passed first
		// lingering is still this fetch's. Records without a timestamp (-1)
		// tell nothing of bursts.
		if lingering && first.UnixMilli() > 0 {
			bursts.observe(n, size, last.Sub(first), now.Sub(sentAt))
		}
		lingering = c.cfg.Linger > 0 && n > 0 && time.Duration(n)*c.cfg.Linger/2 >= now.Sub(lastData)
		switch {
		case !lingering:
			arrived = arrivals{} // a new stream starts from LingerRecords
		case c.cfg.LingerSpan > 0:
			if waited {
				// The estimate asked for more than came in a whole linger
				// (after a backlog, the rate it was read at): start again
				// from this answer rather than wait out its decay.
				arrived = arrivals{}
			}
			arrived.add(size, now.Sub(lastData))
		}
		if n > 0 {
			lastData = now
			// A moving average of the record size, for the bytes that make
			// LingerRecords records.
			if avg := float64(size) / float64(n); avgBytes == 0 {
				avgBytes = avg
			} else {
				avgBytes += (avg - avgBytes) / 8
			}
		}
		clear(gather)
		for _, g := range gots {
			if !c.handOver(ctx, g.p, g.msgs, queues, rt, gather) {
				return progressed, nil // stopping
			}
			// Past control batches (transaction markers) and offsets
			// compacted away, which carry no record to hand over.
			g.p.next = max(g.p.next, g.end)
			c.setLag(g.p.key, g.hw-g.p.next)
		}
		// A broker enforcing a quota answers at once and asks the client to
		// wait (KIP-219) before its next request.
		throttled(ctx, throttle)
	}
	return progressed, nil
}

// handOver gives one partition's records to its worker (rt's choice, or
// its own), in offset order, each once its bytes fit the budget. It returns
// false when ctx ended: a record not handed over is fetched again by
// whoever owns the partition.
func (c *Consumer) handOver(ctx context.Context, p *partState, msgs []kafka.Message, queues map[partKey]chan kafka.Message, rt *router, gather map[string]partKey) bool {
	if len(msgs) == 0 {
		return true
	}
	wk := c.workerOf(p.key)
	if rt != nil {
		var err error
		if wk, err = rt.route(ctx, p.key, len(msgs), gather); err != nil {
			return false
		}
	}
	q := queues[wk]
	for i, m := range msgs {
		size := recordBytes(m)
		if c.buf.acquire(ctx, size) != nil {
			rt.done(msgs[i:])
			return false
		}
		select {
		case q <- m:
			p.next = m.Offset + 1
		case <-ctx.Done():
			c.buf.release(size)
			rt.done(msgs[i:])
			return false
		}
	}
	return true
}

// offsetBook holds the offsets a generation's workers finished and not yet
// committed: the next offset to read, per partition.
type offsetBook struct {
	gen     *kafka.Generation
	mu      sync.Mutex
	pending map[string]map[int]int64
}

func (b *offsetBook) add(lasts []kafka.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[string]map[int]int64{}
	}
	for _, m := range lasts {
		t := b.pending[m.Topic]
		if t == nil {
			t = map[int]int64{}
			b.pending[m.Topic] = t
		}
		t[m.Partition] = max(t[m.Partition], m.Offset+1)
	}
}

// flush commits the book's offsets with its generation; on failure they stay
// for the next flush (unless newer ones came).
func (c *Consumer) flush(b *offsetBook) {
	b.mu.Lock()
	p := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(p) == 0 {
		return
	}
	err := b.gen.CommitOffsets(p)
	if err == nil {
		return
	}
	c.cfg.Log.Warn("committing offsets", "group", c.cfg.GroupID, "generation", b.gen.ID, "error", err.Error())
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = p
		return
	}
	for topic, parts := range p {
		if b.pending[topic] == nil {
			b.pending[topic] = parts
			continue
		}
		for part, off := range parts {
			b.pending[topic][part] = max(b.pending[topic][part], off)
		}
	}
}

// fetchRequests counts the consumers' fetch requests.
var fetchRequests, _ = otel.Meter(instrumentation).Int64Counter("closedloop.kafka.fetch.requests", metric.WithUnit("{request}"),
	metric.WithDescription("Fetch requests sent by the process's consumers (one per broker at a time, for every partition it leads)."))

// throttled waits the time a broker enforcing a quota asked for (KIP-219:
// it answers at once with the delay and mutes the connection meanwhile).
func throttled(ctx context.Context, ms int32) {
	if ms <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
