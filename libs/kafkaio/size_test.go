package kafkaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// createTopic creates a one-partition topic with the given max.message.bytes.
func createTopic(t *testing.T, addrs []string, name string, maxBytes int) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: 5 * time.Second, Transport: &kafka.Transport{}}
	resp, err := c.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(maxBytes)}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Errors[name]; err != nil {
		t.Fatal(err)
	}
}

// readAll reads every record of partition 0 of topic.
func readAll(t *testing.T, addrs []string, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: topic, Partition: 0, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %d of %d records of %s: %v", len(out), n, topic, err)
		}
		out = append(out, m)
	}
	return out
}

func TestTheTopicsRealMaxMessageBytesIsRead(t *testing.T) {
	addrs := broker(t, "plain")
	createTopic(t, addrs, "small", 50_000)
	got, err := TopicMaxMessageBytes(context.Background(), addrs, "plain", "small")
	if err != nil {
		t.Fatal(err)
	}
	if got["small"] != 50_000 || got["plain"] != DefaultMaxMessageBytes {
		t.Fatalf("max.message.bytes = %v, want small=50000 and plain=%d", got, DefaultMaxMessageBytes)
	}
}

func TestAProducerFailsOnlyTheRecordThatCannotFit(t *testing.T) {
	addrs := broker(t)
	createTopic(t, addrs, "small", 50_000)
	sizes := []int{10_000, 60_000, 10_000, 20_000, 20_000, 45_000}
	recs := make([]Record, len(sizes))
	for i, n := range sizes {
		recs[i] = Record{Topic: "small", Key: []byte("k"), Value: bytes.Repeat([]byte{byte('a' + i)}, n)}
	}
	for _, tc := range []struct {
		name  string
		limit int // the producer's own limit; 0 = Kafka's default, above the topic's
	}{{"knowing the topic's limit", 50_000}, {"with only the broker knowing it", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewProducer(ProducerConfig{Brokers: addrs, MaxMessageBytes: tc.limit})
			defer p.Close()
			errs := p.ProduceEach(context.Background(), recs...)
			if errs == nil {
				t.Fatal("every record written; the 60 kB one cannot fit in 50 kB")
			}
			for i, err := range errs {
				if (sizes[i] > 50_000) != (err != nil) {
					t.Fatalf("record %d (%d bytes): error %v", i, sizes[i], err)
				}
				if err == nil {
					continue
				}
				if !errors.Is(err, ErrRecordTooLarge) {
					t.Fatalf("record %d: %v is not ErrRecordTooLarge", i, err)
				}
				if reason, ok := IsPermanent(err); !ok || reason != ReasonRecordTooLarge {
					t.Fatalf("record %d: %v is not Permanent(%s)", i, err, ReasonRecordTooLarge)
				}
			}
		})
	}
	// Both runs wrote the five records that fit, nothing else.
	got := readAll(t, addrs, "small", 10)
	for _, m := range got {
		if len(m.Value) > 50_000 {
			t.Fatalf("a %d-byte record was written", len(m.Value))
		}
	}
}

func TestTheBatcherBatchesByBytesAndFailsATooLargeRecordAlone(t *testing.T) {
	addrs := broker(t)
	createTopic(t, addrs, "raw", 200_000)
	for _, tc := range []struct {
		name  string
		limit int
	}{{"knowing the topic's limit", 200_000}, {"with only the broker knowing it", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBatcher(BatcherConfig{Brokers: addrs, MaxMessageBytes: tc.limit})
			defer b.Close()
			// 30 concurrent 20 kB records: one request of all of them (600 kB)
			// would be refused and fail every caller.
			var wg sync.WaitGroup
			errs := make([]error, 30)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = b.Produce(context.Background(), Record{Topic: "raw", Key: []byte(strconv.Itoa(i)), Value: bytes.Repeat([]byte("x"), 20_000)})
				}()
			}
			var bigErr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				bigErr = b.Produce(context.Background(), Record{Topic: "raw", Key: []byte("big"), Value: bytes.Repeat([]byte("y"), 210_000)})
			}()
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("small record %d failed: %v", i, err)
				}
			}
			if !errors.Is(bigErr, ErrRecordTooLarge) {
				t.Fatalf("the 210 kB record: %v, want ErrRecordTooLarge", bigErr)
			}
		})
	}
	got := readAll(t, addrs, "raw", 60)
	for _, m := range got {
		if len(m.Value) != 20_000 {
			t.Fatalf("a %d-byte record was written", len(m.Value))
		}
	}
}

// A stage whose output does not fit in its topic quarantines the input
// record and goes on: the partition never stops on one record.
func TestARecordAStageCannotProduceIsQuarantinedAndThePartitionMovesOn(t *testing.T) {
	addrs := broker(t, "in")
	createTopic(t, addrs, "out", 30_000)
	createTopic(t, addrs, "q", 12_000) // smaller than the largest input: its quarantine keeps the reason, not the value
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	inputs := []int{100, 5_000, 15_000, 100, 100} // each output is twice the input
	for i, n := range inputs {
		if err := p.Produce(context.Background(), Record{Topic: "in", Key: []byte("same"), Value: append([]byte(strconv.Itoa(i)+":"), bytes.Repeat([]byte("v"), n)...)}); err != nil {
			t.Fatal(err)
		}
	}
	got := newSeen()
	cfg := ConsumerConfig{Brokers: addrs, GroupID: "stage", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q", Log: quiet(), RetryBackoffMax: 50 * time.Millisecond}
	stop := runConsumer(t, cfg, func(ctx context.Context, m kafka.Message) error {
		out := append(append([]byte(nil), m.Value...), m.Value...)
		if errs := p.ProduceEach(ctx, Record{Topic: "out", Key: m.Key, Value: out}); errs != nil {
			return errs[0]
		}
		got.add(string(m.Value[:bytes.IndexByte(m.Value, ':')]))
		return nil
	})
	defer stop()
	if v := got.wait(t, 4); fmt.Sprint(v) != "[0 1 3 4]" {
		t.Fatalf("handled %v, want [0 1 3 4] (2 quarantined)", v)
	}
	q := readAll(t, addrs, "q", 1)[0]
	hdr := map[string]string{}
	for _, h := range q.Headers {
		hdr[h.Key] = string(h.Value)
	}
	if hdr[HeaderQuarantineReason] != ReasonRecordTooLarge || hdr[HeaderQuarantineOffset] != "2" || hdr[HeaderQuarantineValueOmitted] == "" || len(q.Value) != 0 {
		t.Fatalf("quarantined %d bytes with headers %v; want reason %s, offset 2, value omitted", len(q.Value), hdr, ReasonRecordTooLarge)
	}
}
