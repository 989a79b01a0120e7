// Package lag reads how far consumer groups are behind: per partition, the
// group's committed offset against the partition's end offset, straight from
// the brokers (no cooperation from the consumers needed).
package lag

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/segmentio/kafka-go"
)

// Partition is one partition of a consumed topic.
type Partition struct {
	Topic     string
	Partition int
	Committed int64 // -1: the group never committed here
	End       int64
	Lag       int64
}

// Reader reads lag from the brokers.
type Reader struct {
	Client *kafka.Client
}

// New returns a Reader for the brokers.
func New(brokers []string) *Reader {
	return &Reader{Client: &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}}
}

// Ends returns the end offset of every partition of topics.
func (r *Reader) Ends(ctx context.Context, topics []string) (map[string]map[int]int64, map[string]map[int]int64, error) {
	md, err := r.Client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, nil, fmt.Errorf("metadata: %w", err)
	}
	first, last := map[string][]kafka.OffsetRequest{}, map[string][]kafka.OffsetRequest{}
	for _, t := range md.Topics {
		if t.Error != nil {
			return nil, nil, fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			first[t.Name] = append(first[t.Name], kafka.FirstOffsetOf(p.ID))
			last[t.Name] = append(last[t.Name], kafka.LastOffsetOf(p.ID))
		}
	}
	starts, ends := map[string]map[int]int64{}, map[string]map[int]int64{}
	for _, q := range []struct {
		req map[string][]kafka.OffsetRequest
		out map[string]map[int]int64
		end bool
	}{{first, starts, false}, {last, ends, true}} {
		res, err := r.Client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: q.req})
		if err != nil {
			return nil, nil, fmt.Errorf("list offsets: %w", err)
		}
		for topic, parts := range res.Topics {
			q.out[topic] = map[int]int64{}
			for _, p := range parts {
				if p.Error != nil {
					return nil, nil, fmt.Errorf("offsets of %s/%d: %w", topic, p.Partition, p.Error)
				}
				if q.end {
					q.out[topic][p.Partition] = p.LastOffset
				} else {
					q.out[topic][p.Partition] = p.FirstOffset
				}
			}
		}
	}
	return starts, ends, nil
}

// Group returns the lag of group on topics, per partition, sorted.
func (r *Reader) Group(ctx context.Context, group string, topics []string) ([]Partition, error) {
	starts, ends, err := r.Ends(ctx, topics)
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
	var out []Partition
	for topic, parts := range ends {
		for p, end := range parts {
			c, ok := committed[topic][p]
			if !ok {
				c = -1
			}
			from := c
			if from < 0 {
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
