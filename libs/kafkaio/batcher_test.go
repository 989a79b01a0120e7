package kafkaio

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

func TestConcurrentCallersAreBatchedAndEachRecordIsWrittenOnceToItsKeysPartition(t *testing.T) {
	addrs := broker(t, "raw")
	b := NewBatcher(BatcherConfig{Brokers: addrs})
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	produceAll(t, b, 200, func(i int) Record {
		return Record{Topic: "raw", Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint(i))}
	})
	msgs, err := readAny(context.Background(), addrs, "raw")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range msgs {
		seen[string(m.Value)]++
		// The batcher and the Producer agree on a key's partition.
		want := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: m.Key}, 0, 1, 2)
		if m.Partition != want {
			t.Fatalf("key %s on partition %d, want %d", m.Key, m.Partition, want)
		}
		if Header(m, "traceparent") == "" {
			t.Fatalf("record %s has no trace context", m.Value)
		}
	}
	if len(seen) != 200 || len(msgs) != 200 {
		t.Fatalf("%d records, %d distinct; want 200 once each", len(msgs), len(seen))
	}
	if err := b.Produce(context.Background(), Record{Topic: "raw", Value: []byte("late")}); err == nil {
		t.Fatal("produce after Close succeeded")
	}
}

func TestAProduceToAMissingTopicFailsFast(t *testing.T) {
	addrs := broker(t, "raw")
	b := NewBatcher(BatcherConfig{Brokers: addrs})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Produce(ctx, Record{Topic: "nope", Value: []byte("x")}); err == nil {
		t.Fatal("produce to a missing topic succeeded")
	}
}

// With partitions led by different brokers and two topics at once, each
// request goes to one broker with a batch per partition, and every record
// lands once in its key's partition; a nil value stays a tombstone.
func TestTheBatcherSendsOneRequestPerBrokerAcrossPartitionsAndTopics(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "a", "b"), kfake.Ports(0, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	b := NewBatcher(BatcherConfig{Brokers: addrs})
	produceAll(t, b, 400, func(i int) Record {
		r := Record{Topic: []string{"a", "b"}[i%2], Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint(i))}
		if i%50 == 0 {
			r.Value = nil
		}
		return r
	})
	total, tombstones := 0, 0
	for _, topic := range []string{"a", "b"} {
		msgs, err := readAny(context.Background(), addrs, topic)
		if err != nil {
			t.Fatal(err)
		}
		keys := map[string]bool{}
		for _, m := range msgs {
			if keys[string(m.Key)] {
				t.Fatalf("%s: key %s twice", topic, m.Key)
			}
			keys[string(m.Key)] = true
			if want := (kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: m.Key}, 0, 1, 2); m.Partition != want {
				t.Fatalf("%s: key %s on partition %d, want %d", topic, m.Key, m.Partition, want)
			}
			if m.Value == nil {
				tombstones++
			}
		}
		total += len(msgs)
	}
	if total != 400 || tombstones != 8 {
		t.Fatalf("%d records, %d tombstones; want 400 and 8", total, tombstones)
	}
}

// produceAll calls b.Produce for n records at once, each from its own
// goroutine, fails on any error, then closes b.
func produceAll(t *testing.T, b *Batcher, n int, rec func(i int) Record) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- b.Produce(context.Background(), rec(i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}
