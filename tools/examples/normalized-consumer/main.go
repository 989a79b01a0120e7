// Command normalized-consumer is the smallest correct consumer of the
// public feedback.normalized.v1 topic, for teams that build on it: its own
// consumer group, protobuf decoding with the generated contract, commit
// after the work is done, and dedupe on event_id — the topic is
// at-least-once, so a consumer must expect to see an event twice.
//
//	go run ./tools/examples/normalized-consumer -brokers localhost:9092 -group my-team
package main

import (
	"container/list"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

func main() {
	brokers := flag.String("brokers", "localhost:9092", "Kafka brokers")
	group := flag.String("group", "example-normalized-consumer", "your consumer group")
	topic := flag.String("topic", "feedback.normalized.v1", "the normalized topic")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The brokers' TLS and SASL from the environment, as the services read
	// them (KAFKA_TLS_*, KAFKA_SASL_*; docs/deploy.md).
	env := config.FromEnviron()
	sec := kafkaio.LoadSecurity(env)
	if err := env.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	kafkaio.UseSecurity(sec)
	r := kafkaio.NewReader(kafka.ReaderConfig{
		Brokers: strings.Split(*brokers, ","), GroupID: *group, Topic: *topic,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond, SessionTimeout: 10 * time.Second,
		StartOffset: kafka.FirstOffset,
	})
	defer r.Close()
	seen := newLRU(100_000) // in production: your store's unique key on event_id
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintln(os.Stderr, "fetch:", err)
			time.Sleep(time.Second)
			continue
		}
		var ev feedbackv1.FeedbackEvent
		if err := proto.Unmarshal(m.Value, &ev); err != nil {
			fmt.Fprintf(os.Stderr, "skipping an undecodable record at %d/%d: %v\n", m.Partition, m.Offset, err)
		} else if seen.add(ev.EventId) {
			fmt.Printf("%s %s %s/%s score=%v segment=%s\n", ev.OccurredAt.AsTime().Format(time.RFC3339), ev.Kind,
				ev.Source, ev.GetSubject().GetId(), ev.GetScore().GetValue(), ev.Segment)
		}
		// Commit only after the event is handled.
		if err := r.CommitMessages(ctx, m); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "commit:", err)
		}
	}
}

// lru remembers the most recent event ids.
type lru struct {
	max   int
	order *list.List
	items map[string]*list.Element
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), items: map[string]*list.Element{}}
}

// add reports whether id is new.
func (l *lru) add(id string) bool {
	if e, ok := l.items[id]; ok {
		l.order.MoveToFront(e)
		return false
	}
	l.items[id] = l.order.PushFront(id)
	if l.order.Len() > l.max {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.items, old.Value.(string))
	}
	return true
}
