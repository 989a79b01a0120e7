package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
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
	c := newCluster(t, 3, 3, "a", "b")
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

// failProduces makes the cluster answer the first n produce requests with
// code for every partition; it returns how many produce requests came.
func failProduces(c *kfake.Cluster, n int32, code int16) (requests *atomic.Int32, failing chan struct{}) {
	return failProducesThrottled(c, n, code, 0, nil)
}

// failProducesThrottled is failProduces with a quota's delay in each failed
// answer, and the arrival time of every produce request in at.
func failProducesThrottled(c *kfake.Cluster, n int32, code int16, throttleMs int32, at chan<- time.Time) (requests *atomic.Int32, failing chan struct{}) {
	requests, failing = &atomic.Int32{}, make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		i := requests.Add(1)
		if at != nil {
			at <- time.Now()
		}
		if i > n {
			return nil, nil, false
		}
		if i == 1 {
			close(failing)
		}
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.ThrottleMillis = throttleMs
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return requests, failing
}

func numbered(from, to int) []Record {
	var recs []Record
	for i := from; i < to; i++ {
		recs = append(recs, Record{Topic: "o", Key: []byte("same"), Value: []byte(strconv.Itoa(i))})
	}
	return recs
}

func TestAProducerRetriesAFailedPartitionBeforeAnythingBehindIt(t *testing.T) {
	c := newCluster(t, 1, 1, "o")
	// NOT_LEADER_OR_FOLLOWER twice: retriable (a leader moving).
	requests, failing := failProduces(c, 2, 6)
	p := NewProducer(ProducerConfig{Brokers: c.ListenAddrs()})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := make(chan []error, 1)
	// One record, so that the call has queued it all when its request is at
	// the broker (the records of two calls that overlap have no order).
	go func() { first <- p.ProduceEach(ctx, numbered(0, 1)...) }()
	<-failing // the first call's request is at the broker; this call queues behind it
	if errs := p.ProduceEach(ctx, numbered(1, 20)...); errs != nil {
		t.Fatalf("second call: %v", errs)
	}
	if errs := <-first; errs != nil {
		t.Fatalf("first call, retried: %v", errs)
	}
	if n := requests.Load(); n < 4 {
		t.Fatalf("%d produce requests; want the two failures, the retry and the second call's", n)
	}
	got := readAll(t, c.ListenAddrs(), "o", 20)
	for i, m := range got {
		if string(m.Value) != strconv.Itoa(i) {
			t.Fatalf("record %d of the partition is %s: the retry let later records pass", i, m.Value)
		}
	}
}

func TestAProducerDoesNotRetryWhatCannotPass(t *testing.T) {
	c := newCluster(t, 1, 1, "o")
	requests, _ := failProduces(c, 1000, 29) // TOPIC_AUTHORIZATION_FAILED, every time
	p := NewProducer(ProducerConfig{Brokers: c.ListenAddrs()})
	defer p.Close()
	// One record: one request, and one more for each retry there would be.
	errs := p.ProduceEach(context.Background(), numbered(0, 1)...)
	if len(errs) != 1 || errs[0] == nil {
		t.Fatalf("errors %v; want the record failed", errs)
	}
	if !errors.Is(errs[0], kafka.TopicAuthorizationFailed) {
		t.Fatalf("%v is not the broker's TopicAuthorizationFailed", errs[0])
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d produce requests; an authorization failure was retried", n)
	}
}

// A broker enforcing a quota answers at once and asks the client to wait
// (KIP-219): the producer's next request to it waits that long.
func TestAProducerWaitsTheDelayABrokersQuotaAsksFor(t *testing.T) {
	c := newCluster(t, 1, 1, "o")
	at := make(chan time.Time, 10)
	failProducesThrottled(c, 1, 6, 600, at) // retriable, with a 600 ms quota delay
	p := NewProducer(ProducerConfig{Brokers: c.ListenAddrs()})
	defer p.Close()
	if errs := p.ProduceEach(context.Background(), numbered(0, 1)...); errs != nil {
		t.Fatal(errs)
	}
	first, second := <-at, <-at
	if gap := second.Sub(first); gap < 600*time.Millisecond {
		t.Fatalf("the retry came %v after the throttled answer; the broker asked for 600ms", gap)
	}
}

// There is no sending goroutine: callers send. A call with more records
// than a lane holds sends from the full lane itself, and callers that find
// every sender busy are served by the busy ones.
func TestCallersSendEvenWhenTheirRecordsOverflowTheLane(t *testing.T) {
	addrs := broker(t, "raw")
	b := NewBatcher(BatcherConfig{Brokers: addrs, MaxBatch: 2, InFlight: 1}) // the lane holds 8 records
	recs := make([]Record, 50)
	for i := range recs {
		recs[i] = Record{Topic: "raw", Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint("big-", i))}
	}
	done := make(chan []error, 1)
	go func() { done <- b.ProduceEach(context.Background(), recs...) }()
	select {
	case errs := <-done:
		if errs != nil {
			t.Fatal(errs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a call of 50 records through a lane of 8 never returned")
	}
	// 200 callers of one record each at once, one sender: every record is
	// sent, by whoever holds the sender.
	produceAll(t, b, 200, func(i int) Record {
		return Record{Topic: "raw", Key: []byte(fmt.Sprint("c", i)), Value: []byte(fmt.Sprint("one-", i))}
	})
	msgs, err := readAny(context.Background(), addrs, "raw")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 250 {
		t.Fatalf("%d records in the topic, want 250", len(msgs))
	}
}

// Callers that miss a topic's metadata at once share one lookup: after a
// failure every caller misses, and a burst must not become a connection
// and a metadata request each.
func TestCallersMissingATopicShareOneLookup(t *testing.T) {
	c := newCluster(t, 1, 3, "raw")
	var lookups atomic.Int32
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if lookups.Add(1) == 1 {
			<-release // hold the first lookup until every caller is waiting
		}
		return nil, nil, false
	})
	b := NewBatcher(BatcherConfig{Brokers: c.ListenAddrs()})
	go func() {
		time.Sleep(300 * time.Millisecond)
		close(release)
	}()
	produceAll(t, b, 200, func(i int) Record {
		return Record{Topic: "raw", Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint(i))}
	})
	if n := lookups.Load(); n != 1 {
		t.Fatalf("%d metadata requests for 200 callers of one topic, want 1", n)
	}
}
