package kafkaio

import (
	"context"
	"sync"

	"github.com/segmentio/kafka-go"
)

// router chooses the worker that gets a partition's records, when a
// topic's partitions share workers (ConsumerConfig.Workers > 0).
//
// A partition's home is worker partition mod Workers. Under load its
// records go home, so that the topic's workers share the partitions. When
// every worker of the topic is idle as a fetch answer is handed over, all
// of the answer's records of that topic go to one worker instead: at
// moderate rates an answer then makes one batch, not one per worker (at
// 1,000 events/s over two workers, batches of ~11 records instead of two
// of ~5.5, each batch a produce, a Redis round trip or an INSERT).
//
// With GatherTopics the same holds across topics: when every worker of
// every topic is idle, the whole answer goes to one worker.
//
// A partition changes worker only when none of its records is waiting for
// its worker or in a handler call (pending), so each partition's records
// are still handled in offset order by one worker at a time. Going home
// again may make the fetcher wait for the worker that has them to finish.
type router struct {
	workerOf func(partKey) partKey
	mu       sync.Mutex
	workers  map[string][]partKey // a topic's workers ("" with across: every worker)
	across   bool                 // GatherTopics
	owner    map[partKey]partKey  // the worker of a partition with pending records
	pending  map[partKey]int      // a partition's records handed over and not done
	load     map[partKey]int      // a worker's pending records
	drained  chan struct{}        // closed when some partition's pending records reach zero
}

func newRouter(workerOf func(partKey) partKey, workers []partKey, across bool) *router {
	r := &router{workerOf: workerOf, workers: map[string][]partKey{}, owner: map[partKey]partKey{},
		pending: map[partKey]int{}, load: map[partKey]int{}, drained: make(chan struct{}), across: across}
	for _, w := range workers {
		g := r.group(w.topic)
		r.workers[g] = append(r.workers[g], w)
	}
	return r
}

// group is the key of the workers a topic's records may be gathered to.
func (r *router) group(topic string) string {
	if r.across {
		return ""
	}
	return topic
}

// route counts n records of partition k as pending and returns their
// worker. gather holds, per topic (with across, one for all), the worker
// this answer's records went to when those workers were all idle (the
// caller clears it for each answer). It waits (until ctx ends) while k must
// leave a worker that still has its records.
func (r *router) route(ctx context.Context, k partKey, n int, gather map[string]partKey) (partKey, error) {
	home := r.workerOf(k)
	r.mu.Lock()
	defer r.mu.Unlock()
	target := home
	if g := r.group(k.topic); len(r.workers[g]) > 1 {
		if t, ok := gather[g]; ok {
			target = t
		} else if r.idle(r.workers[g]) {
			gather[g] = home
		}
	}
	for r.pending[k] > 0 && r.owner[k] != target {
		drained := r.drained
		r.mu.Unlock()
		select {
		case <-drained:
		case <-ctx.Done():
			r.mu.Lock()
			return partKey{}, ctx.Err()
		}
		r.mu.Lock()
	}
	r.owner[k] = target
	r.pending[k] += n
	r.load[target] += n
	return target, nil
}

func (r *router) idle(ws []partKey) bool {
	for _, w := range ws {
		if r.load[w] > 0 {
			return false
		}
	}
	return true
}

// done counts records as no longer pending (handled, quarantined, or
// dropped because the consumer stops or the fetch was cut short). A nil
// router does nothing.
func (r *router) done(msgs []kafka.Message) {
	if r == nil || len(msgs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	freed := false
	for _, m := range msgs {
		k := partKey{m.Topic, m.Partition}
		r.pending[k]--
		r.load[r.owner[k]]--
		if r.pending[k] == 0 {
			delete(r.pending, k)
			delete(r.owner, k)
			freed = true
		}
	}
	if freed {
		close(r.drained)
		r.drained = make(chan struct{})
	}
}
