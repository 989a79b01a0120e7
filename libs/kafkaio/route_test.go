package kafkaio

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// keysOnEveryPartition returns a key for each of a topic's 3 partitions.
func keysOnEveryPartition() []string {
	keys := make([]string, 3)
	for i, found := 0, 0; found < 3; i++ {
		k := fmt.Sprint("k", i)
		p := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(k)}, 0, 1, 2)
		if keys[p] == "" {
			keys[p] = k
			found++
		}
	}
	return keys
}

// When every worker is idle, a fetch answer's records of all partitions go
// to one worker (one batch, unless the worker starts before the fetcher has
// handed it all): with two workers, partitions 0 and 2 are worker 0's and
// partition 1 worker 1's, and without the router the answer splits.
func TestAnIdleConsumersAnswerGoesToOneWorker(t *testing.T) {
	p, mu, by := workersByRecord(t, broker(t, "in", "q"), ConsumerConfig{Topics: []string{"in"}, Workers: 2})
	keys := keysOnEveryPartition()
	ctx := context.Background()
	// The group forms on a first record.
	if err := p.Produce(ctx, Record{Topic: "in", Key: []byte(keys[0]), Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	pollUntil(mu, func() bool { return len(by) == 1 })
	// One produce request: one answer with a record on each partition.
	var recs []Record
	for i, k := range keys {
		recs = append(recs, Record{Topic: "in", Key: []byte(k), Value: []byte(fmt.Sprint("r", i))})
	}
	if err := p.Produce(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	pollUntil(mu, func() bool { return len(by) == 4 })
	mu.Lock()
	defer mu.Unlock()
	if by["r0"] != by["r1"] || by["r1"] != by["r2"] {
		t.Fatalf("the answer's records went to %v: not to one worker", by)
	}
}

// Under load each partition's records are still handled once each, in
// offset order, by one worker at a time, while the answers go now to one
// worker (idle) and now to every partition's own (busy); and a backlog
// spreads over both workers.
func TestPartitionsChangeWorkersOnlyBetweenTheirRecordsAndSpreadUnderLoad(t *testing.T) {
	partitionsChangeWorkersSafely(t, false, "in")
}

// The same across two topics whose answers are gathered to one worker.
func TestGatheredTopicsKeepEachPartitionsOrderUnderLoad(t *testing.T) {
	partitionsChangeWorkersSafely(t, true, "in", "in2")
}

func partitionsChangeWorkersSafely(t *testing.T, gather bool, topics ...string) {
	addrs := broker(t, append([]string{"q"}, topics...)...)
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	keys := keysOnEveryPartition()
	var mu sync.Mutex
	handled := map[string]int{}
	last := map[string]int{} // topic/partition → last sequence number handled
	busy := map[string]string{}
	var disorder []string
	inHandler, concurrent, mixed := 0, 0, 0
	c, err := NewBatchConsumer(ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: topics, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), Workers: 2, MaxBatch: 7, GatherTopics: gather},
		func(ctx context.Context, batch []Delivery) []error {
			mu.Lock()
			inHandler++
			concurrent = max(concurrent, inHandler)
			for _, d := range batch {
				tp := fmt.Sprint(d.Msg.Topic, "/", d.Msg.Partition)
				// A partition in two handler calls at once, or out of order.
				if w, ok := busy[tp]; ok && w != WorkerOf(ctx) {
					disorder = append(disorder, fmt.Sprintf("partition %s in %s and %s at once", tp, w, WorkerOf(ctx)))
				}
				busy[tp] = WorkerOf(ctx)
				var part, seq int
				fmt.Sscanf(string(d.Msg.Value), "%d:%d", &part, &seq)
				if seq <= last[tp] {
					disorder = append(disorder, fmt.Sprintf("partition %s: %d after %d", tp, seq, last[tp]))
				}
				last[tp] = seq
				handled[d.Msg.Topic+" "+string(d.Msg.Value)]++
				if d.Msg.Topic != batch[0].Msg.Topic {
					mixed++
				}
			}
			mu.Unlock()
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			mu.Lock()
			for _, d := range batch {
				delete(busy, fmt.Sprint(d.Msg.Topic, "/", d.Msg.Partition))
			}
			inHandler--
			mu.Unlock()
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer runBatch(c)()
	ctx := context.Background()
	seq := map[string]int{}
	next := func(topic string, part int) Record {
		tp := fmt.Sprint(topic, "/", part)
		seq[tp]++
		return Record{Topic: topic, Key: []byte(keys[part]), Value: []byte(fmt.Sprintf("%d:%d", part, seq[tp]))}
	}
	total := 0
	// Trickles (answers to idle workers) and bursts (a backlog), mixed.
	for round := range 60 {
		var recs []Record
		n := 1 + rand.IntN(4)
		if round%5 == 4 {
			n = 60
		}
		for range n {
			recs = append(recs, next(topics[rand.IntN(len(topics))], rand.IntN(3)))
		}
		if err := p.Produce(ctx, recs...); err != nil {
			t.Fatal(err)
		}
		total += len(recs)
		time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
	}
	pollUntil(&mu, func() bool { return len(handled) == total })
	time.Sleep(200 * time.Millisecond) // a wrong extra handling would show
	mu.Lock()
	defer mu.Unlock()
	if len(disorder) > 0 {
		t.Fatalf("%d violations, first: %v", len(disorder), disorder[0])
	}
	for v, n := range handled {
		if n != 1 {
			t.Fatalf("%s handled %d times", v, n)
		}
	}
	if len(handled) != total {
		t.Fatalf("handled %d of %d", len(handled), total)
	}
	if concurrent < 2 {
		t.Fatal("the backlogs never had both workers handling at once")
	}
	if gather != (mixed > 0) {
		t.Fatalf("gathering topics %v, but %d records shared a batch with another topic's", gather, mixed)
	}
}

// With GatherTopics an idle consumer's answer goes to one worker whatever
// its topics; without, each topic's records go to that topic's workers.
func TestGatherTopicsSendsAnIdleConsumersWholeAnswerToOneWorker(t *testing.T) {
	for _, gather := range []bool{false, true} {
		t.Run(fmt.Sprint("gather=", gather), func(t *testing.T) {
			p, mu, by := workersByRecord(t, broker(t, "a", "b", "q"), ConsumerConfig{Topics: []string{"a", "b"}, Workers: 2, GatherTopics: gather})
			ctx := context.Background()
			if err := p.Produce(ctx, Record{Topic: "a", Key: []byte("k"), Value: []byte("first")}); err != nil {
				t.Fatal(err)
			}
			pollUntil(mu, func() bool { return len(by) == 1 })
			// One produce request: one answer with a record of each topic.
			if err := p.Produce(ctx, Record{Topic: "a", Key: []byte("k"), Value: []byte("ra")}, Record{Topic: "b", Key: []byte("k"), Value: []byte("rb")}); err != nil {
				t.Fatal(err)
			}
			pollUntil(mu, func() bool { return len(by) == 3 })
			mu.Lock()
			defer mu.Unlock()
			if same := by["ra"] == by["rb"]; same != gather {
				t.Fatalf("gathering %v, the answer's records went to %v", gather, by)
			}
		})
	}
}

// workersByRecord runs a batch consumer of cfg's topics (group "g",
// quarantine topic "q") that notes which worker handled each record, by
// value, in by (under mu); p produces to addrs.
func workersByRecord(t *testing.T, addrs []string, cfg ConsumerConfig) (p *Producer, mu *sync.Mutex, by map[string]string) {
	t.Helper()
	p = NewProducer(ProducerConfig{Brokers: addrs})
	t.Cleanup(func() { p.Close() })
	mu, by = &sync.Mutex{}, map[string]string{}
	cfg.Brokers, cfg.GroupID, cfg.Quarantine, cfg.QuarantineTopic, cfg.Log = addrs, "g", p, "q", quiet()
	c, err := NewBatchConsumer(cfg, func(ctx context.Context, batch []Delivery) []error {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range batch {
			by[string(d.Msg.Value)] = WorkerOf(ctx)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runBatch(c))
	return p, mu, by
}
