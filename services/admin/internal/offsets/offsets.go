// Package offsets reads topics and consumer groups straight from the
// brokers: the end offsets of partitions, how far a consumer group is
// behind (its committed offset against the end, no cooperation from the
// consumers needed), and a range of one partition.
package offsets

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/libs/kafkaio"
)

// Partition is one partition of a consumed topic.
type Partition struct {
	Topic     string
	Partition int
	Committed int64 // -1: the group never committed here
	End       int64
	Lag       int64
}

// Reader reads offsets from the brokers.
type Reader struct {
	Client *kafka.Client
}

// New returns a Reader for the brokers.
func New(brokers []string) *Reader {
	return &Reader{Client: kafkaio.NewClient(brokers, 0)}
}

// Ends returns the end offset of every partition of topics.
func (r *Reader) Ends(ctx context.Context, topics []string) (map[string]map[int]int64, error) {
	return r.list(ctx, topics, false)
}

// Starts returns the first offset of every partition of topics (what
// retention kept).
func (r *Reader) Starts(ctx context.Context, topics []string) (map[string]map[int]int64, error) {
	return r.list(ctx, topics, true)
}

// list asks for the first or the end offset of every partition of topics.
func (r *Reader) list(ctx context.Context, topics []string, first bool) (map[string]map[int]int64, error) {
	which := kafka.LastOffsetOf
	if first {
		which = kafka.FirstOffsetOf
	}
	md, err := r.Client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	req := map[string][]kafka.OffsetRequest{}
	for _, t := range md.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			req[t.Name] = append(req[t.Name], which(p.ID))
		}
	}
	res, err := r.Client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	out := map[string]map[int]int64{}
	for topic, parts := range res.Topics {
		out[topic] = map[int]int64{}
		for _, p := range parts {
			if p.Error != nil {
				return nil, fmt.Errorf("offsets of %s/%d: %w", topic, p.Partition, p.Error)
			}
			out[topic][p.Partition] = p.LastOffset
			if first {
				out[topic][p.Partition] = p.FirstOffset
			}
		}
	}
	return out, nil
}

// Group returns the lag of group on topics, per partition, sorted.
func (r *Reader) Group(ctx context.Context, group string, topics []string) ([]Partition, error) {
	ends, err := r.Ends(ctx, topics)
	if err != nil {
		return nil, err
	}
	req := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{}}
	for topic, parts := range ends {
		for p := range parts {
			req.Topics[topic] = append(req.Topics[topic], p)
		}
	}
	committed := map[string]map[int]int64{}
	res, err := r.Client.OffsetFetch(ctx, req)
	switch {
	case err != nil:
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	case res.Error != nil && !errors.Is(res.Error, kafka.GroupIdNotFound):
		// A group that never committed is "not found" to some brokers: no commits.
		return nil, fmt.Errorf("offsets of group %s: %w", group, res.Error)
	case res.Error == nil:
		for topic, parts := range res.Topics {
			committed[topic] = map[int]int64{}
			for _, p := range parts {
				if p.Error == nil && p.CommittedOffset >= 0 {
					committed[topic][p.Partition] = p.CommittedOffset
				}
			}
		}
	}
	var starts map[string]map[int]int64 // read only when some partition has no commit
	var out []Partition
	for topic, parts := range ends {
		for p, end := range parts {
			c, ok := committed[topic][p]
			from := c
			if !ok {
				c = -1
				if starts == nil {
					if starts, err = r.list(ctx, topics, true); err != nil {
						return nil, err
					}
				}
				from = starts[topic][p] // a new group starts at the beginning
			}
			out = append(out, Partition{Topic: topic, Partition: p, Committed: c, End: end, Lag: max(0, end-from)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out, nil
}

// ReadRange reads [from, end) of one partition in order, calling fn for
// each record until it returns false or an error (returned as is). ctx
// bounds the whole read.
func ReadRange(ctx context.Context, brokers []string, topic string, partition int, from, end int64, fn func(kafka.Message) (bool, error)) error {
	if from >= end {
		return nil
	}
	r := kafkaio.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: partition, MinBytes: 1, MaxBytes: 10 << 20,
		MaxWait: 100 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		return err
	}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return fmt.Errorf("reading %s/%d from %d: %w", topic, partition, from, err)
		}
		more, err := fn(m)
		if err != nil || !more || m.Offset >= end-1 {
			return err
		}
	}
}
