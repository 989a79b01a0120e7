package kafkaio

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

// batchOf encodes recs as the record batch a produce request carries (its
// length prefix stripped), at base offset base.
func batchOf(base int64, recs ...*pending) []byte {
	c := &brokerConn{}
	b := c.appendBatch(nil, recs, time.Now().UnixMilli())[4:]
	binary.BigEndian.PutUint64(b, uint64(base))
	return b
}

// reseal sets a batch's attributes and recomputes its checksum.
func reseal(b []byte, attrs uint16) []byte {
	binary.BigEndian.PutUint16(b[21:], attrs)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b
}

func TestARecordBatchReadsBackExactlyWhatWasWritten(t *testing.T) {
	big := bytes.Repeat([]byte("v"), 100<<10) // past the arena's chunk: its own copy
	recs := []*pending{
		{key: []byte("k1"), value: []byte("one"), headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-abc")}, {Key: "empty", Value: []byte{}}}},
		{key: nil, value: []byte{}},
		{key: []byte("k3"), value: nil},
		{key: []byte("k4"), value: big},
	}
	data := append(batchOf(40, recs[:2]...), batchOf(42, recs[2:]...)...)
	c := &brokerConn{keys: map[string]string{}}
	msgs, end, err := c.readRecords(nil, "t", 2, 99, 40, data)
	if err != nil || end != 44 || len(msgs) != 4 {
		t.Fatalf("read %d records, end %d, %v; want 4, 44", len(msgs), end, err)
	}
	for i, m := range msgs {
		r := recs[i]
		if m.Topic != "t" || m.Partition != 2 || m.Offset != int64(40+i) || m.HighWaterMark != 99 || time.Since(m.Time) > time.Minute {
			t.Errorf("record %d: %s/%d@%d hw %d at %v", i, m.Topic, m.Partition, m.Offset, m.HighWaterMark, m.Time)
		}
		if (m.Key == nil) != (r.key == nil) || !bytes.Equal(m.Key, r.key) || (m.Value == nil) != (r.value == nil) || !bytes.Equal(m.Value, r.value) {
			t.Errorf("record %d: key %q value %d bytes (nil %v), want %q, %d bytes (nil %v)", i, m.Key, len(m.Value), m.Value == nil, r.key, len(r.value), r.value == nil)
		}
		if len(m.Headers) != len(r.headers) {
			t.Fatalf("record %d: %d headers, want %d", i, len(m.Headers), len(r.headers))
		}
		for h := range r.headers {
			if m.Headers[h].Key != r.headers[h].Key || !bytes.Equal(m.Headers[h].Value, r.headers[h].Value) {
				t.Errorf("record %d header %d: %+v, want %+v", i, h, m.Headers[h], r.headers[h])
			}
		}
	}
	// Nothing read aliases the answer: the connection reuses its buffer.
	clear(data)
	if string(msgs[0].Key) != "k1" || string(msgs[0].Headers[0].Value) != "00-abc" || msgs[3].Value[0] != 'v' {
		t.Fatal("records share memory with the answer they were read from")
	}

	// From an offset inside the first batch: only what follows.
	msgs, end, err = c.readRecords(nil, "t", 2, 99, 41, append(batchOf(40, recs[:2]...), batchOf(42, recs[2:]...)...))
	if err != nil || end != 44 || len(msgs) != 3 || msgs[0].Offset != 41 {
		t.Fatalf("from 41: %d records (first %v), end %d, %v", len(msgs), msgs, end, err)
	}
}

func TestControlBatchesAndAPartialBatchAreSteppedOver(t *testing.T) {
	c := &brokerConn{keys: map[string]string{}}
	data := reseal(batchOf(10, &pending{key: []byte("marker"), value: []byte{0, 0, 0, 1}}), attrControl)
	data = append(data, batchOf(11, &pending{key: []byte("k"), value: []byte("after")})...)
	partial := batchOf(12, &pending{key: []byte("k"), value: []byte("cut")})
	data = append(data, partial[:len(partial)-3]...) // the answer's size limit cut it
	msgs, end, err := c.readRecords(nil, "t", 0, 13, 10, data)
	if err != nil || len(msgs) != 1 || string(msgs[0].Value) != "after" || end != 12 {
		t.Fatalf("got %d records (%v), end %d, %v; want only \"after\", end 12", len(msgs), msgs, end, err)
	}
	// A control batch alone still moves the fetch on.
	msgs, end, err = c.readRecords(nil, "t", 0, 11, 10, data[:len(batchOf(10, &pending{key: []byte("marker"), value: []byte{0, 0, 0, 1}}))])
	if err != nil || len(msgs) != 0 || end != 11 {
		t.Fatalf("a lone control batch: %d records, end %d, %v; want none, end 11", len(msgs), end, err)
	}
}

func TestACorruptOrForeignBatchIsAnErrorNeverAPanic(t *testing.T) {
	c := &brokerConn{keys: map[string]string{}}
	good := batchOf(0, &pending{key: []byte("k"), value: []byte("v"), headers: []kafka.Header{{Key: "h", Value: []byte("x")}}})
	flipped := bytes.Clone(good)
	flipped[len(flipped)-2] ^= 0xff
	if _, _, err := c.readRecords(nil, "t", 0, 1, 0, flipped); !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a flipped byte: %v, want a checksum error", err)
	}
	v1 := bytes.Clone(good)
	v1[16] = 1
	if _, _, err := c.readRecords(nil, "t", 0, 1, 0, v1); err == nil || !strings.Contains(err.Error(), "message format v1") {
		t.Fatalf("message format v1: %v", err)
	}
	short := bytes.Clone(good)
	binary.BigEndian.PutUint32(short[8:], 10)
	if _, _, err := c.readRecords(nil, "t", 0, 1, 0, short); !errors.Is(err, errCorrupt) {
		t.Fatalf("a batch length below its header: %v", err)
	}
	// Every truncation and every byte flipped inside the records (checksum
	// made right again): an error or records, never a panic or a hang.
	for i := batchHeaderBytes; i < len(good); i++ {
		for _, v := range []byte{0x00, 0x7f, 0x80, 0xff} {
			b := bytes.Clone(good)
			b[i] = v
			c.readRecords(nil, "t", 0, 1, 0, reseal(b, 0)) //nolint:errcheck
		}
		c.readRecords(nil, "t", 0, 1, 0, good[:i]) //nolint:errcheck
	}
}

func FuzzReadRecords(f *testing.F) {
	f.Add(batchOf(0, &pending{key: []byte("k"), value: []byte("v"), headers: []kafka.Header{{Key: "h", Value: []byte("x")}}}))
	f.Add(batchOf(5, &pending{value: []byte("a")}, &pending{key: []byte("b")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &brokerConn{keys: map[string]string{}}
		if len(data) >= batchHeaderBytes { // get past the checksum to the records
			binary.BigEndian.PutUint32(data[17:], crc32.Checksum(data[21:], castagnoli))
		}
		msgs, _, err := c.readRecords(nil, "t", 0, 0, 0, data)
		if err == nil {
			for _, m := range msgs {
				_ = fmt.Sprint(m.Key, m.Value, m.Headers)
			}
		}
	})
}

// A batch compressed by another client (any codec Kafka has) reads as the
// records it holds.
func TestCompressedBatchesAreRead(t *testing.T) {
	codecs := []compress.Compression{compress.Gzip, compress.Snappy, compress.Lz4, compress.Zstd}
	var topics []string
	for _, cd := range codecs {
		topics = append(topics, "in-"+cd.String())
	}
	addrs := broker(t, append(topics, "q")...)
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	for i, cd := range codecs {
		w := &kafka.Writer{Addr: kafka.TCP(addrs...), Topic: topics[i], Compression: kafka.Compression(cd), BatchTimeout: time.Millisecond,
			Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll}
		var msgs []kafka.Message
		for j := range 50 {
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(j % 3)), Value: bytes.Repeat([]byte(fmt.Sprint(j)), 20),
				Headers: []kafka.Header{{Key: "n", Value: []byte(fmt.Sprint(j))}}})
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatalf("%s: %v", cd, err)
		}
		w.Close()
	}
	got := newSeen()
	stop := runConsumer(t, ConsumerConfig{Brokers: addrs, GroupID: "gz", Topics: topics, Quarantine: p, QuarantineTopic: "q", Log: quiet()}, func(_ context.Context, m kafka.Message) error {
		want := string(bytes.Repeat(m.Headers[0].Value, 20))
		if string(m.Value) != want {
			got.add(fmt.Sprintf("%s: value %q, want %q", m.Topic, m.Value, want))
			return nil
		}
		got.add(m.Topic)
		return nil
	})
	defer stop()
	count := map[string]int{}
	for _, v := range got.wait(t, 200) {
		count[v]++
	}
	for _, topic := range topics {
		if count[topic] != 50 {
			t.Errorf("%s: %d records read intact of 50 (all: %v)", topic, count[topic], count)
		}
	}
}

// Leaders move under a producer and a consumer (three brokers): the
// producer's first request after the move is answered NOT_LEADER and sent
// again to the new leader, the consumer's fetchers look the leaders up
// again, and every record is read once.
func TestLeadersMoveUnderAProducerAndAConsumer(t *testing.T) {
	c := newCluster(t, 3, 3, "m", "q")
	addrs := c.ListenAddrs()
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	got := newSeen()
	stop := runConsumer(t, ConsumerConfig{Brokers: addrs, GroupID: "moves", Topics: []string{"m"}, Quarantine: p, QuarantineTopic: "q", Log: quiet()},
		func(_ context.Context, m kafka.Message) error { got.add(string(m.Value)); return nil })
	defer stop()
	produce := func(from int) {
		t.Helper()
		var recs []Record
		for i := from; i < from+30; i++ {
			recs = append(recs, Record{Topic: "m", Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint(i))})
		}
		if err := p.Produce(context.Background(), recs...); err != nil {
			t.Fatalf("produce after the move: %v", err)
		}
	}
	produce(0)
	got.wait(t, 30)
	for part := range int32(3) {
		if err := c.MoveTopicPartition("m", part, (c.LeaderFor("m", part)+1)%3); err != nil {
			t.Fatal(err)
		}
	}
	produce(30)
	got.wait(t, 30)
	time.Sleep(500 * time.Millisecond) // anything read twice would show now
	got.mu.Lock()
	defer got.mu.Unlock()
	count := map[string]int{}
	for _, v := range got.vals {
		count[v]++
	}
	if len(got.vals) != 60 || len(count) != 60 {
		t.Fatalf("read %d records, %d distinct; want 60 once each", len(got.vals), len(count))
	}
}
