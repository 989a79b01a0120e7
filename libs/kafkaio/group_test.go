package kafkaio

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The fetch path is the consumer's own (one fetch per broker for all its
// partitions), the membership kafka-go's: a member joining or leaving moves
// partitions, and the records handled before the move are committed with the
// generation that handled them, so the next owner neither skips nor repeats.
func TestPartitionsMoveBetweenMembersWithoutLosingOrRepeatingARecord(t *testing.T) {
	addrs := broker(t, "in", "q") // three partitions
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	next := 0
	produce := func(n int) {
		t.Helper()
		recs := make([]Record, n)
		for i := range recs {
			recs[i] = Record{Topic: "in", Key: []byte(fmt.Sprint("k", next)), Value: []byte(fmt.Sprint(next))}
			next++
		}
		if err := p.Produce(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	times := map[string]int{}
	by := map[string]int{} // records handled per member
	handler := func(member string) Handler {
		return func(_ context.Context, m kafka.Message) error {
			mu.Lock()
			defer mu.Unlock()
			times[string(m.Value)]++
			by[member]++
			return nil
		}
	}
	handled := func(n int) func() bool { return func() bool { return len(times) >= n } }
	cfg := ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), SessionTimeout: 6 * time.Second, CommitInterval: 50 * time.Millisecond}

	produce(300)
	stopA := runConsumer(t, cfg, handler("a"))
	pollUntil(&mu, handled(300))
	stopB := runConsumer(t, cfg, handler("b"))
	// Keep producing until the group has rebalanced and b handles a share.
	for deadline := time.Now().Add(30 * time.Second); ; {
		produce(30)
		mu.Lock()
		bHas := by["b"] > 0
		mu.Unlock()
		if bHas {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second member got no partitions")
		}
		time.Sleep(200 * time.Millisecond)
	}
	pollUntil(&mu, handled(next))
	stopA() // a leaves: b takes over a's partitions from a's commits
	produce(300)
	pollUntil(&mu, handled(next))
	stopB()

	mu.Lock()
	defer mu.Unlock()
	if len(times) != next {
		t.Fatalf("handled %d distinct records of %d", len(times), next)
	}
	for v, n := range times {
		if n != 1 {
			t.Fatalf("record %s handled %d times", v, n)
		}
	}
	t.Logf("%d records: a handled %d, b %d", next, by["a"], by["b"])
	if by["a"] == 0 || by["b"] == 0 {
		t.Fatalf("a handled %d, b %d: the partitions never moved", by["a"], by["b"])
	}
}

// A committed offset past the partition's end (a topic recreated, a log
// truncated) is out of range: the consumer starts the partition over from
// its first record rather than waiting for an offset that may never come —
// or skipping records it never saw.
func TestAnOffsetOutOfRangeStartsThePartitionOver(t *testing.T) {
	addrs := broker(t, "q")
	createTopic(t, addrs, "one", 1<<20)
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	for i := range 5 {
		if err := p.Produce(context.Background(), Record{Topic: "one", Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	client := &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: 5 * time.Second}
	resp, err := client.OffsetCommit(context.Background(), &kafka.OffsetCommitRequest{GroupID: "g", GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{"one": {{Partition: 0, Offset: 1000}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range resp.Topics["one"] {
		if part.Error != nil {
			t.Fatal(part.Error)
		}
	}
	got := newSeen()
	cfg := ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"one"}, Quarantine: p, QuarantineTopic: "q", Log: quiet()}
	stop := runConsumer(t, cfg, func(_ context.Context, m kafka.Message) error { got.add(string(m.Value)); return nil })
	defer stop()
	if v := got.wait(t, 5); fmt.Sprint(v) != "[0 1 2 3 4]" {
		t.Fatalf("handled %v, want the partition from its first record", v)
	}
}

// The byte budget outlives a generation: records a worker left behind when
// it gave up a retried batch (the generation ended) go back to it.
func TestAGenerationThatEndsMidRetryGivesItsRecordsBytesBack(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	recs := make([]Record, 50)
	for i := range recs {
		recs[i] = Record{Topic: "in", Key: []byte("same"), Value: []byte(fmt.Sprint(i))}
	}
	if err := p.Produce(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := 0
	cfg := ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q", Log: quiet()}
	c, err := NewConsumer(cfg, func(context.Context, kafka.Message) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return fmt.Errorf("the dependency is down")
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := runBatch(c)
	pollUntil(&mu, func() bool { return calls >= 2 && c.Buffered() > 0 })
	stop()
	if n := c.Buffered(); n != 0 {
		t.Fatalf("%d bytes still counted after the generation ended", n)
	}
}

// A member whose handler call outlasts the generation (a slow destination)
// does not hold the group's rebalance for long: the call is cancelled half a
// session timeout after the generation ended, its record is not committed,
// and the partition's owner in the next generation handles it.
func TestAHandlerCallStillRunningAtARebalanceIsCancelled(t *testing.T) {
	addrs := broker(t, "in", "q")
	p := NewProducer(ProducerConfig{Brokers: addrs})
	defer p.Close()
	for i := range 30 {
		if err := p.Produce(context.Background(), Record{Topic: "in", Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := ConsumerConfig{Brokers: addrs, GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q",
		Log: quiet(), SessionTimeout: 6 * time.Second}
	blocked, ended := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	done := map[string]bool{} // handled successfully, by either member
	stopA := runConsumer(t, cfg, func(ctx context.Context, m kafka.Message) error {
		first := false
		once.Do(func() { first = true })
		if first {
			close(blocked)
			<-ctx.Done() // a call that would never end on its own
			close(ended)
			return ctx.Err()
		}
		mu.Lock()
		defer mu.Unlock()
		done[string(m.Value)] = true
		return nil
	})
	defer stopA()
	<-blocked
	joined := time.Now()
	stopB := runConsumer(t, cfg, func(_ context.Context, m kafka.Message) error {
		mu.Lock()
		defer mu.Unlock()
		done[string(m.Value)] = true
		return nil
	})
	defer stopB()
	select {
	case <-ended:
		t.Logf("the call was cancelled %v after the second member joined", time.Since(joined).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("the handler call was never cancelled: the rebalance waited for it")
	}
	pollUntil(&mu, func() bool { return len(done) == 30 })
	mu.Lock()
	defer mu.Unlock()
	if len(done) != 30 {
		t.Fatalf("%d of 30 records handled: the cancelled call's record was lost", len(done))
	}
}

// The consumer, too, waits the delay a broker's quota asks for before its
// next fetch (KIP-219).
func TestAConsumerWaitsTheDelayABrokersQuotaAsksFor(t *testing.T) {
	c := newCluster(t, 1, 1, "in", "q")
	at := make(chan time.Time, 100)
	var fetches atomic.Int32
	c.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		at <- time.Now()
		if fetches.Add(1) > 1 {
			return nil, nil, false
		}
		req := kreq.(*kmsg.FetchRequest)
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		resp.ThrottleMillis = 600
		for _, rt := range req.Topics {
			st := kmsg.NewFetchResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition = rp.Partition
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	p := NewProducer(ProducerConfig{Brokers: c.ListenAddrs()})
	defer p.Close()
	got := newSeen()
	cfg := ConsumerConfig{Brokers: c.ListenAddrs(), GroupID: "g", Topics: []string{"in"}, Quarantine: p, QuarantineTopic: "q", Log: quiet()}
	stop := runConsumer(t, cfg, func(_ context.Context, m kafka.Message) error { got.add(string(m.Value)); return nil })
	defer stop()
	if err := p.Produce(context.Background(), Record{Topic: "in", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	got.wait(t, 1)
	first, second := <-at, <-at
	if gap := second.Sub(first); gap < 600*time.Millisecond {
		t.Fatalf("the second fetch came %v after the throttled answer; the broker asked for 600ms", gap)
	}
}
