package kafkaio

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	listoffsetsapi "github.com/segmentio/kafka-go/protocol/listoffsets"
	metadataapi "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
	"github.com/segmentio/kafka-go/sasl"
)

// The connections the hot paths use: a consumer's fetches and a producer's
// produce requests. kafka-go's Transport hands each request to a goroutine
// that owns the connection and hands the answer back (two wake-ups per
// request on top of the network's), and encodes and decodes by reflection,
// putting each record batch of an answer in pages of 64 KiB. At moderate
// rates a stage makes hundreds of these requests per second and the
// hand-offs and the decoding were most of its fetch path's CPU
// (docs/benchmarks.md, "Fourth pass"). A brokerConn is one connection owned
// by the one goroutine that uses it (a fetcher, a producer's sender): it
// writes the request and reads the answer itself, encodes Fetch and Produce
// by hand and decodes record batches (v2, Kafka ≥ 0.11) straight out of
// one reused buffer. The handshake — TLS, ApiVersions, SASL — and the
// rarer Metadata and ListOffsets requests use kafka-go's protocol codec on
// these connections (asked of the brokers, never from a cache); the group's
// requests stay on kafka-go's own connections.

// Versions spoken: Fetch v4 (record batches, isolation) to v11, Produce v3
// (record batches) to v8 (per-record errors), Metadata v1–v8, ListOffsets
// v1–v5 — the highest both sides know.
const (
	apiProduce = protocol.ApiKey(0)
	apiFetch   = protocol.ApiKey(1)

	minFetchVersion, maxFetchVersion             = 4, 11
	minProduceVersion, maxProduceVersion         = 3, 8
	minMetadataVersion, maxMetadataVersion       = 1, 8 // kafka-go's codec: v0 reads an empty list as every topic
	minListOffsetsVersion, maxListOffsetsVersion = 1, 5 // kafka-go's codec

	// maxAnswerBytes bounds an answer's size as read off the connection (a
	// fetch answer is at most its MaxBytes, past it only by a first record
	// batch larger than that): a corrupt or hostile size cannot allocate
	// more.
	maxAnswerBytes = 128 << 20
)

// errCorrupt is an answer that does not parse as the protocol says.
var errCorrupt = errors.New("kafkaio: malformed answer from the broker")

// brokerConn is one connection to one broker; not safe for concurrent use.
type brokerConn struct {
	pc       *protocol.Conn
	addr     string
	clientID string
	corr     int32
	fetchV   int16
	produceV int16
	metaV    int16
	listV    int16
	out      []byte // the request being built
	in       []byte // the last answer's body
	rec      []byte // one record being encoded
	keys     map[string]string
}

// dialBroker connects to addr with the process's security (TLS, SASL) and
// agrees on the Fetch and Produce versions.
func dialBroker(ctx context.Context, addr, clientID string) (*brokerConn, error) {
	s := CurrentSecurity()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := net.Dialer{Timeout: 3 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	host, port, _ := net.SplitHostPort(addr)
	if s.TLS != nil {
		cfg := s.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	c := &brokerConn{pc: protocol.NewConn(nc, clientID), addr: addr, clientID: clientID, keys: map[string]string{}}
	if err := c.handshake(ctx, s.SASL, host, port); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return c, nil
}

func (c *brokerConn) handshake(ctx context.Context, mech sasl.Mechanism, host, port string) error {
	defer c.within(ctx, 10*time.Second)()
	c.pc.SetVersions(map[protocol.ApiKey]int16{protocol.ApiVersions: 0, protocol.SaslHandshake: 1, protocol.SaslAuthenticate: 0})
	msg, err := c.pc.RoundTrip(&apiversions.Request{})
	if err != nil {
		return fmt.Errorf("api versions: %w", err)
	}
	av := msg.(*apiversions.Response)
	if av.ErrorCode != 0 {
		return fmt.Errorf("api versions: %w", kafka.Error(av.ErrorCode))
	}
	c.fetchV, c.produceV, c.metaV, c.listV = -1, -1, -1, -1
	for _, k := range av.ApiKeys {
		switch protocol.ApiKey(k.ApiKey) {
		case protocol.ListOffsets:
			if k.MaxVersion >= minListOffsetsVersion && k.MinVersion <= maxListOffsetsVersion {
				c.listV = min(k.MaxVersion, maxListOffsetsVersion)
			}
		case protocol.Metadata:
			if k.MaxVersion >= minMetadataVersion && k.MinVersion <= maxMetadataVersion {
				c.metaV = min(k.MaxVersion, maxMetadataVersion)
			}
		case apiFetch:
			if k.MaxVersion >= minFetchVersion && k.MinVersion <= maxFetchVersion {
				c.fetchV = min(k.MaxVersion, maxFetchVersion)
			}
		case apiProduce:
			if k.MaxVersion >= minProduceVersion && k.MinVersion <= maxProduceVersion {
				c.produceV = min(k.MaxVersion, maxProduceVersion)
			}
		}
	}
	if c.fetchV < 0 || c.produceV < 0 || c.metaV < 0 || c.listV < 0 {
		return fmt.Errorf("the broker does not speak Fetch v%d–v%d, Produce v%d–v%d, Metadata v%d–v%d and ListOffsets v%d–v%d (Kafka 0.11 or later)",
			minFetchVersion, maxFetchVersion, minProduceVersion, maxProduceVersion, minMetadataVersion, maxMetadataVersion,
			minListOffsetsVersion, maxListOffsetsVersion)
	}
	c.pc.SetVersions(map[protocol.ApiKey]int16{protocol.ApiVersions: 0, protocol.SaslHandshake: 1, protocol.SaslAuthenticate: 0,
		protocol.Metadata: c.metaV, protocol.ListOffsets: c.listV})
	if mech == nil {
		return nil
	}
	p, _ := strconv.Atoi(port)
	ctx = sasl.WithMetadata(ctx, &sasl.Metadata{Host: host, Port: p})
	msg, err = c.pc.RoundTrip(&saslhandshake.Request{Mechanism: mech.Name()})
	if err != nil {
		return fmt.Errorf("SASL handshake: %w", err)
	}
	if code := msg.(*saslhandshake.Response).ErrorCode; code != 0 {
		return fmt.Errorf("SASL handshake (%s): %w", mech.Name(), kafka.Error(code))
	}
	sess, state, err := mech.Start(ctx)
	if err != nil {
		return fmt.Errorf("SASL %s: %w", mech.Name(), err)
	}
	for done := false; !done; {
		msg, err := c.pc.RoundTrip(&saslauthenticate.Request{AuthBytes: state})
		if errors.Is(err, io.EOF) { // a broker may end a failed exchange by closing
			return fmt.Errorf("SASL %s: %w", mech.Name(), kafka.SASLAuthenticationFailed)
		}
		if err != nil {
			return fmt.Errorf("SASL %s: %w", mech.Name(), err)
		}
		res := msg.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			return fmt.Errorf("SASL %s: %w (%s)", mech.Name(), kafka.Error(res.ErrorCode), res.ErrorMessage)
		}
		if done, state, err = sess.Next(ctx, res.AuthBytes); err != nil {
			return fmt.Errorf("SASL %s: %w", mech.Name(), err)
		}
	}
	return nil
}

func (c *brokerConn) Close() error { return c.pc.Close() }

// lookup asks the first of brokers that answers for the topics' partitions
// and their leaders. It bypasses kafka-go's Transport, whose metadata is a
// cache refreshed every 10 s and when its own requests fail: after a
// leader moved, a fetch or produce on these connections needs the new
// leader now, not at the next refresh.
func lookup(ctx context.Context, brokers []string, clientID string, topics []string) (*metadataapi.Response, error) {
	var errs []error
	for _, addr := range brokers {
		c, err := dialBroker(ctx, addr, clientID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res, err := c.metadata(ctx, topics)
		c.Close()
		if err == nil {
			return res, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("metadata of %v: %w", topics, errors.Join(errs...))
}

func (c *brokerConn) metadata(ctx context.Context, topics []string) (*metadataapi.Response, error) {
	defer c.within(ctx, 10*time.Second)()
	msg, err := c.pc.RoundTrip(&metadataapi.Request{TopicNames: topics})
	if err != nil {
		return nil, c.wrap(ctx, err)
	}
	res, ok := msg.(*metadataapi.Response)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected answer %T to a metadata request", c.addr, msg)
	}
	return res, nil
}

// listOffsets asks the broker (the partitions' leader) for each partition's
// offset at ts: -2 its first offset, -1 its end.
func (c *brokerConn) listOffsets(ctx context.Context, parts []partKey, ts int64) (map[partKey]int64, error) {
	req := &listoffsetsapi.Request{ReplicaID: -1}
	for _, p := range parts {
		i := slices.IndexFunc(req.Topics, func(t listoffsetsapi.RequestTopic) bool { return t.Topic == p.topic })
		if i < 0 {
			i = len(req.Topics)
			req.Topics = append(req.Topics, listoffsetsapi.RequestTopic{Topic: p.topic})
		}
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, listoffsetsapi.RequestPartition{
			Partition: int32(p.partition), CurrentLeaderEpoch: -1, Timestamp: ts})
	}
	defer c.within(ctx, 10*time.Second)()
	msg, err := c.pc.RoundTrip(req)
	if err != nil {
		return nil, c.wrap(ctx, err)
	}
	res, ok := msg.(*listoffsetsapi.Response)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected answer %T to a list offsets request", c.addr, msg)
	}
	out := make(map[partKey]int64, len(parts))
	for _, t := range res.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return nil, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, kafka.Error(p.ErrorCode))
			}
			out[partKey{t.Topic, int(p.Partition)}] = p.Offset
		}
	}
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("partition %d of %s missing from the answer", p.partition, p.topic)
		}
	}
	return out, nil
}

// leaderAddrs maps each partition of an answer's topics to the address of
// its leader; a partition without one (an error, no leader elected) is
// missing.
func leaderAddrs(res *metadataapi.Response) map[partKey]leaderAddr {
	brokers := make(map[int32]string, len(res.Brokers))
	for _, b := range res.Brokers {
		brokers[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
	}
	out := map[partKey]leaderAddr{}
	for _, t := range res.Topics {
		if t.ErrorCode != 0 {
			continue
		}
		for _, p := range t.Partitions {
			if addr, ok := brokers[p.LeaderID]; ok && p.ErrorCode == 0 {
				out[partKey{t.Name, int(p.PartitionIndex)}] = leaderAddr{int(p.LeaderID), addr}
			}
		}
	}
	return out
}

type leaderAddr struct {
	id   int
	addr string
}

// begin starts a request of api at version v in c.out.
func (c *brokerConn) begin(api protocol.ApiKey, v int16) {
	c.corr++
	b := append(c.out[:0], 0, 0, 0, 0) // size, set by exchange
	b = binary.BigEndian.AppendUint16(b, uint16(api))
	b = binary.BigEndian.AppendUint16(b, uint16(v))
	b = binary.BigEndian.AppendUint32(b, uint32(c.corr))
	c.out = appendString(b, c.clientID)
}

// exchange sends the request in c.out and reads its answer's body into
// c.in, within timeout or until ctx ends. Any error leaves the connection
// unusable: close it.
func (c *brokerConn) exchange(ctx context.Context, timeout time.Duration) (*decoder, error) {
	binary.BigEndian.PutUint32(c.out, uint32(len(c.out)-4))
	defer c.within(ctx, timeout)()
	if _, err := c.pc.Write(c.out); err != nil {
		return nil, c.wrap(ctx, err)
	}
	var hdr [8]byte
	if _, err := io.ReadFull(c.pc, hdr[:]); err != nil {
		return nil, c.wrap(ctx, err)
	}
	size := int64(int32(binary.BigEndian.Uint32(hdr[:4])))
	if corr := int32(binary.BigEndian.Uint32(hdr[4:])); corr != c.corr {
		return nil, fmt.Errorf("%s: answer to request %d while waiting for %d: %w", c.addr, corr, c.corr, errCorrupt)
	}
	if size < 4 || size-4 > maxAnswerBytes {
		return nil, fmt.Errorf("%s: answer of %d bytes: %w", c.addr, size, errCorrupt)
	}
	n := int(size - 4)
	if cap(c.in) < n {
		c.in = make([]byte, n)
	}
	c.in = c.in[:n]
	if _, err := io.ReadFull(c.pc, c.in); err != nil {
		return nil, c.wrap(ctx, err)
	}
	return &decoder{b: c.in}, nil
}

// within bounds the connection's next exchange by d (or ctx's deadline, if
// sooner) and ends it when ctx ends; call the returned func once done.
func (c *brokerConn) within(ctx context.Context, d time.Duration) (done func()) {
	deadline := time.Now().Add(d)
	if cd, ok := ctx.Deadline(); ok && cd.Before(deadline) {
		deadline = cd
	}
	c.pc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.pc.SetDeadline(time.Unix(1, 0)) })
	return func() { stop() }
}

// wrap reports ctx's error rather than the deadline it set.
func (c *brokerConn) wrap(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%s: %w", c.addr, err)
}

// fetchRequest is one fetch: every partition with its offset.
type fetchRequest struct {
	maxWait, minBytes, maxBytes int32
	topics                      []fetchTopic
}

type fetchTopic struct {
	name  string
	parts []fetchPart
}

type fetchPart struct {
	partition int32
	offset    int64
	maxBytes  int32
}

// fetchAnswer is one partition's part of a fetch answer; records is the
// partition's record batches, valid until the connection's next request.
type fetchAnswer struct {
	topic         string
	partition     int32
	errorCode     int16
	highWatermark int64
	records       []byte
}

// fetch sends req and returns the broker's answer per partition (valid
// until the next request) and the quota delay it asks for.
func (c *brokerConn) fetch(ctx context.Context, req *fetchRequest, timeout time.Duration, out []fetchAnswer) ([]fetchAnswer, int32, error) {
	v := c.fetchV
	c.begin(apiFetch, v)
	b := binary.BigEndian.AppendUint32(c.out, ^uint32(0)) // replica id -1: a consumer
	b = binary.BigEndian.AppendUint32(b, uint32(req.maxWait))
	b = binary.BigEndian.AppendUint32(b, uint32(max(req.minBytes, 1)))
	b = binary.BigEndian.AppendUint32(b, uint32(req.maxBytes))
	b = append(b, 0) // isolation: read uncommitted
	if v >= 7 {
		b = binary.BigEndian.AppendUint32(b, 0)          // session id: no fetch session
		b = binary.BigEndian.AppendUint32(b, ^uint32(0)) // session epoch -1
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(req.topics)))
	for _, t := range req.topics {
		b = appendString(b, t.name)
		b = binary.BigEndian.AppendUint32(b, uint32(len(t.parts)))
		for _, p := range t.parts {
			b = binary.BigEndian.AppendUint32(b, uint32(p.partition))
			if v >= 9 {
				b = binary.BigEndian.AppendUint32(b, ^uint32(0)) // current leader epoch: unknown
			}
			b = binary.BigEndian.AppendUint64(b, uint64(p.offset))
			if v >= 5 {
				b = binary.BigEndian.AppendUint64(b, ^uint64(0)) // log start offset: a consumer's -1
			}
			b = binary.BigEndian.AppendUint32(b, uint32(p.maxBytes))
		}
	}
	if v >= 7 {
		b = binary.BigEndian.AppendUint32(b, 0) // forgotten topics
	}
	if v >= 11 {
		b = appendString(b, "") // rack
	}
	c.out = b
	d, err := c.exchange(ctx, timeout)
	if err != nil {
		return out, 0, err
	}
	throttle := d.int32()
	if v >= 7 {
		if code := d.int16(); code != 0 && d.err == nil {
			return out, throttle, fmt.Errorf("%s: fetch: %w", c.addr, kafka.Error(code))
		}
		d.int32() // session id
	}
	for nt := d.arrayLen(); nt > 0 && d.err == nil; nt-- {
		topic := c.topicName(req, d.stringBytes())
		for np := d.arrayLen(); np > 0 && d.err == nil; np-- {
			a := fetchAnswer{topic: topic, partition: d.int32(), errorCode: d.int16(), highWatermark: d.int64()}
			d.int64() // last stable offset
			if v >= 5 {
				d.int64() // log start offset
			}
			for na := d.arrayLen(); na > 0 && d.err == nil; na-- { // aborted transactions
				d.int64()
				d.int64()
			}
			if v >= 11 {
				d.int32() // preferred read replica
			}
			a.records = d.bytes()
			out = append(out, a)
		}
	}
	if d.err != nil {
		return out, throttle, fmt.Errorf("%s: fetch answer: %w", c.addr, d.err)
	}
	return out, throttle, nil
}

// topicName is the request's name for a topic of the answer (no
// allocation).
func (c *brokerConn) topicName(req *fetchRequest, b []byte) string {
	for _, t := range req.topics {
		if t.name == string(b) {
			return t.name
		}
	}
	return string(b)
}

// headerKey interns a header's key: a handful of keys recur in every
// record.
func (c *brokerConn) headerKey(b []byte) string {
	if s, ok := c.keys[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(c.keys) < 256 {
		c.keys[s] = s
	}
	return s
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record batch v2 header: base offset 8, length 4, leader epoch 4, magic 1,
// crc 4, attributes 2, last offset delta 4, first timestamp 8, max
// timestamp 8, producer id 8, producer epoch 2, base sequence 4, count 4.
const (
	batchHeaderBytes = 61
	attrCompression  = 0x07
	attrLogAppend    = 0x08
	attrControl      = 0x20
)

// decompressed holds a compressed batch's records while they are copied.
var decompressed = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readRecords appends the records of a partition's record batches at
// offset from or later to msgs, their keys, values and headers copied into
// fresh memory. end is the offset after the last whole batch (control
// batches — transaction markers — and records compacted away included): a
// fetch from end continues after everything read. A partial batch at the
// end (the answer's size limit cut it) is left for the next fetch.
func (c *brokerConn) readRecords(msgs []kafka.Message, topic string, partition int, hw, from int64, data []byte) (_ []kafka.Message, end int64, err error) {
	end = from
	var a arena
	for len(data) >= 12 {
		base := int64(binary.BigEndian.Uint64(data))
		size := int64(int32(binary.BigEndian.Uint32(data[8:]))) + 12
		if size < batchHeaderBytes {
			return msgs, end, fmt.Errorf("record batch at %d of %d bytes: %w", base, size, errCorrupt)
		}
		if size > int64(len(data)) {
			break
		}
		batch := data[:size]
		data = data[size:]
		if magic := batch[16]; magic != 2 {
			return msgs, end, fmt.Errorf("record batch at %d is message format v%d; only v2 (Kafka 0.11 and later) is read", base, magic)
		}
		if crc32.Checksum(batch[21:], castagnoli) != binary.BigEndian.Uint32(batch[17:]) {
			return msgs, end, fmt.Errorf("record batch at %d: checksum mismatch: %w", base, errCorrupt)
		}
		attrs := binary.BigEndian.Uint16(batch[21:])
		last := base + int64(int32(binary.BigEndian.Uint32(batch[23:])))
		if last < base {
			return msgs, end, fmt.Errorf("record batch at %d: %w", base, errCorrupt)
		}
		end = max(end, last+1)
		if attrs&attrControl != 0 || last < from {
			continue
		}
		firstTS := int64(binary.BigEndian.Uint64(batch[27:]))
		maxTS := int64(binary.BigEndian.Uint64(batch[35:]))
		count := int(int32(binary.BigEndian.Uint32(batch[57:])))
		recs := batch[batchHeaderBytes:]
		var buf *bytes.Buffer
		if codec := compress.Compression(attrs & attrCompression); codec != 0 {
			cd := codec.Codec()
			if cd == nil {
				return msgs, end, fmt.Errorf("record batch at %d: unknown compression %d", base, codec)
			}
			buf = decompressed.Get().(*bytes.Buffer)
			buf.Reset()
			r := cd.NewReader(bytes.NewReader(recs))
			_, err := buf.ReadFrom(io.LimitReader(r, maxAnswerBytes))
			r.Close()
			if err != nil {
				decompressed.Put(buf)
				return msgs, end, fmt.Errorf("record batch at %d: %s: %w", base, codec, err)
			}
			recs = buf.Bytes()
		}
		a.hint = len(recs)
		d := decoder{b: recs}
		for i := 0; i < count && d.err == nil; i++ {
			rd := decoder{b: d.next(int(d.varint()))}
			rd.int8() // attributes
			ts := firstTS + rd.varint()
			if attrs&attrLogAppend != 0 {
				ts = maxTS
			}
			off := base + rd.varint()
			key, value := rd.varbytes(), rd.varbytes()
			nh := int(rd.varint())
			if rd.err != nil {
				d.err = rd.err
				continue
			}
			if off < from {
				continue
			}
			m := kafka.Message{Topic: topic, Partition: partition, Offset: off, HighWaterMark: hw, Time: time.UnixMilli(ts),
				Key: a.copy(key), Value: a.copy(value)}
			if nh > 0 {
				if nh > len(rd.b) {
					d.err = errCorrupt
					continue
				}
				m.Headers = make([]kafka.Header, nh)
				for h := range m.Headers {
					k := rd.varbytes()
					m.Headers[h] = kafka.Header{Key: c.headerKey(k), Value: a.copy(rd.varbytes())}
				}
			}
			if rd.err != nil {
				d.err = rd.err
				continue
			}
			msgs = append(msgs, m)
		}
		if buf != nil {
			decompressed.Put(buf)
		}
		if d.err != nil {
			return msgs, end, fmt.Errorf("record batch at %d: %w", base, d.err)
		}
	}
	return msgs, end, nil
}

// arena hands out copies from shared chunks: a fetched partition's records
// take a few allocations rather than two or three each. A chunk is at most
// arenaChunk bytes, so a record still held keeps little else alive.
type arena struct {
	buf  []byte
	hint int
}

const arenaChunk = 64 << 10

func (a *arena) copy(b []byte) []byte {
	if b == nil {
		return nil
	}
	if len(b) == 0 {
		return []byte{}
	}
	if len(b) > cap(a.buf)-len(a.buf) {
		if len(b) >= arenaChunk/4 {
			return append(make([]byte, 0, len(b)), b...)
		}
		a.buf = make([]byte, 0, max(min(a.hint, arenaChunk), len(b)))
	}
	start := len(a.buf)
	a.buf = append(a.buf, b...)
	return a.buf[start:len(a.buf):len(a.buf)]
}

// produceBatch is one partition's records of a produce request.
type produceBatch struct {
	topic     string
	partition int32
	recs      []*pending
}

// produceResult is one partition's answer to a produce request.
type produceResult struct {
	errorCode    int16
	errorMessage string
	recordErrors map[int32]string // by index in the batch
}

// produce sends the batches as one acks=all request and returns each
// partition's result (by topic, partition) and the quota delay.
func (c *brokerConn) produce(ctx context.Context, batches []produceBatch, timeout time.Duration) (map[partKey]produceResult, int32, error) {
	v := c.produceV
	c.begin(apiProduce, v)
	b := binary.BigEndian.AppendUint16(c.out, 0xffff) // transactional id: null
	b = binary.BigEndian.AppendUint16(b, 0xffff)      // acks -1: all in-sync replicas
	b = binary.BigEndian.AppendUint32(b, uint32(timeout/time.Millisecond))
	// A topic's partitions go together: the batches in runs by topic.
	slices.SortStableFunc(batches, func(x, y produceBatch) int { return strings.Compare(x.topic, y.topic) })
	topics := 0
	for i := range batches {
		if i == 0 || batches[i].topic != batches[i-1].topic {
			topics++
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(topics))
	now := time.Now().UnixMilli()
	for i := 0; i < len(batches); {
		j := i + 1
		for j < len(batches) && batches[j].topic == batches[i].topic {
			j++
		}
		b = appendString(b, batches[i].topic)
		b = binary.BigEndian.AppendUint32(b, uint32(j-i))
		for _, pb := range batches[i:j] {
			b = binary.BigEndian.AppendUint32(b, uint32(pb.partition))
			b = c.appendBatch(b, pb.recs, now)
		}
		i = j
	}
	c.out = b
	d, err := c.exchange(ctx, timeout+time.Second)
	if err != nil {
		return nil, 0, err
	}
	res := make(map[partKey]produceResult, len(batches))
	for nt := d.arrayLen(); nt > 0 && d.err == nil; nt-- {
		topic := string(d.stringBytes())
		for np := d.arrayLen(); np > 0 && d.err == nil; np-- {
			part := int(d.int32())
			r := produceResult{errorCode: d.int16()}
			d.int64() // base offset
			d.int64() // log append time
			if v >= 5 {
				d.int64() // log start offset
			}
			if v >= 8 {
				for ne := d.arrayLen(); ne > 0 && d.err == nil; ne-- {
					i := d.int32()
					msg := string(d.stringBytes())
					if r.recordErrors == nil {
						r.recordErrors = map[int32]string{}
					}
					r.recordErrors[i] = msg
				}
				r.errorMessage = string(d.stringBytes())
			}
			res[partKey{topic, part}] = r
		}
	}
	throttle := d.int32()
	if d.err != nil {
		return nil, 0, fmt.Errorf("%s: produce answer: %w", c.addr, d.err)
	}
	return res, throttle, nil
}

// appendBatch appends recs as a nullable-bytes record batch v2
// (uncompressed, create time now, no producer id).
func (c *brokerConn) appendBatch(b []byte, recs []*pending, now int64) []byte {
	sizeAt := len(b)
	b = append(b, 0, 0, 0, 0)                        // the bytes' length
	b = binary.BigEndian.AppendUint64(b, 0)          // base offset
	b = append(b, 0, 0, 0, 0)                        // batch length
	b = binary.BigEndian.AppendUint32(b, ^uint32(0)) // partition leader epoch -1
	b = append(b, 2)                                 // magic
	crcAt := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, 0) // attributes
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)-1))
	b = binary.BigEndian.AppendUint64(b, uint64(now))
	b = binary.BigEndian.AppendUint64(b, uint64(now))
	b = binary.BigEndian.AppendUint64(b, ^uint64(0)) // producer id -1
	b = binary.BigEndian.AppendUint16(b, 0xffff)     // producer epoch -1
	b = binary.BigEndian.AppendUint32(b, ^uint32(0)) // base sequence -1
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	for i, p := range recs {
		r := append(c.rec[:0], 0)     // attributes
		r = binary.AppendVarint(r, 0) // timestamp delta
		r = binary.AppendVarint(r, int64(i))
		r = appendVarbytes(r, p.key)
		r = appendVarbytes(r, p.value)
		r = binary.AppendVarint(r, int64(len(p.headers)))
		for _, h := range p.headers {
			r = binary.AppendVarint(r, int64(len(h.Key)))
			r = append(r, h.Key...)
			r = appendVarbytes(r, h.Value)
		}
		c.rec = r
		b = binary.AppendVarint(b, int64(len(r)))
		b = append(b, r...)
	}
	binary.BigEndian.PutUint32(b[sizeAt:], uint32(len(b)-sizeAt-4))
	binary.BigEndian.PutUint32(b[sizeAt+12:], uint32(len(b)-sizeAt-4-12))
	binary.BigEndian.PutUint32(b[crcAt:], crc32.Checksum(b[crcAt+4:], castagnoli))
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendVarbytes appends a record's key or value: a varint length (-1:
// null) and the bytes.
func appendVarbytes(b, v []byte) []byte {
	if v == nil {
		return binary.AppendVarint(b, -1)
	}
	b = binary.AppendVarint(b, int64(len(v)))
	return append(b, v...)
}

// decoder reads an answer's fields; the first short or malformed field
// sets err and every later read returns zero.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) next(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		if d.err == nil {
			d.err = errCorrupt
		}
		d.b = nil
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) int8() int8 {
	if v := d.next(1); v != nil {
		return int8(v[0])
	}
	return 0
}

func (d *decoder) int16() int16 {
	if v := d.next(2); v != nil {
		return int16(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (d *decoder) int32() int32 {
	if v := d.next(4); v != nil {
		return int32(binary.BigEndian.Uint32(v))
	}
	return 0
}

func (d *decoder) int64() int64 {
	if v := d.next(8); v != nil {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// arrayLen is an array's length (a null array: 0).
func (d *decoder) arrayLen() int {
	n := int(d.int32())
	if n < 0 {
		return 0
	}
	if n > len(d.b) { // every element takes a byte at least
		d.err, d.b = errCorrupt, nil
		return 0
	}
	return n
}

// stringBytes is a (nullable) string's bytes, valid as long as the answer.
func (d *decoder) stringBytes() []byte {
	n := int(d.int16())
	if n < 0 {
		return nil
	}
	return d.next(n)
}

// bytes is a nullable bytes field (a null: nil).
func (d *decoder) bytes() []byte {
	n := int(d.int32())
	if n < 0 {
		return nil
	}
	return d.next(n)
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err, d.b = errCorrupt, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

// varbytes is a record's key, value or header value (length -1: nil).
func (d *decoder) varbytes() []byte {
	n := d.varint()
	if n < 0 {
		return nil
	}
	return d.next(int(n))
}
