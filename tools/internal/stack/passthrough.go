package stack

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/libs/kafkaio"
)

// Passthrough is the baseline a stage benchmark compares its stage with, in
// the same run on the same input: consume the stage's input topic with a
// kafka-go consumer group, produce each record unchanged (key, value,
// headers) to the output topic with acks=all, then commit — the least a
// stage that consumes, produces and commits after durable can do. It takes
// what the reader has (up to maxBatch records, waiting at most 2 ms after
// the first) so that it batches as the stages do, and runs until ctx ends.
func Passthrough(ctx context.Context, brokers []string, group, in, out string, maxBatch int) error {
	r := kafkaio.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: group, GroupTopics: []string{in}, MinBytes: 1, MaxBytes: 10 << 20,
		MaxWait: 500 * time.Millisecond, QueueCapacity: maxBatch, SessionTimeout: 10 * time.Second, StartOffset: kafka.FirstOffset,
		CommitInterval: 200 * time.Millisecond}) // the stages commit every 200 ms too
	defer r.Close()
	w := kafkaio.NewWriter(brokers, out) // murmur2, acks=all
	w.BatchSize, w.BatchTimeout, w.BatchBytes = maxBatch, time.Millisecond, 8<<20
	defer w.Close()
	batch := make([]kafka.Message, 0, maxBatch)
	out2 := make([]kafka.Message, 0, maxBatch)
	for ctx.Err() == nil {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("passthrough fetch: %w", err)
		}
		batch = append(batch[:0], m)
		fctx, cancel := context.WithTimeout(ctx, 2*time.Millisecond)
		for len(batch) < maxBatch {
			m, err := r.FetchMessage(fctx)
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		cancel()
		out2 = out2[:0]
		for _, m := range batch {
			out2 = append(out2, kafka.Message{Key: m.Key, Value: m.Value, Headers: m.Headers})
		}
		if err := w.WriteMessages(ctx, out2...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("passthrough produce: %w", err)
		}
		if err := r.CommitMessages(ctx, batch...); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("passthrough commit: %w", err)
		}
	}
	return nil
}

// EndOffsets sums the end offsets of a topic's partitions (the record count
// of a topic that was empty at the start).
func EndOffsets(ctx context.Context, c *kafka.Client, topic string, partitions int) (int64, error) {
	ends, err := PartitionEnds(ctx, c, []string{topic}, partitions)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, e := range ends[topic] {
		sum += e
	}
	return sum, nil
}

// PartitionEnds is the end offset of each partition (0..partitions-1) of
// each topic, in one request.
func PartitionEnds(ctx context.Context, c *kafka.Client, topics []string, partitions int) (map[string][]int64, error) {
	req := map[string][]kafka.OffsetRequest{}
	for _, t := range topics {
		for p := range partitions {
			req[t] = append(req[t], kafka.LastOffsetOf(p))
		}
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		return nil, err
	}
	out := map[string][]int64{}
	for _, t := range topics {
		out[t] = make([]int64, partitions)
		for _, p := range res.Topics[t] {
			if p.Error != nil {
				return nil, p.Error
			}
			if p.Partition < 0 || p.Partition >= partitions {
				return nil, fmt.Errorf("%s: an end offset for partition %d, of %d", t, p.Partition, partitions)
			}
			out[t][p.Partition] = p.LastOffset
		}
	}
	return out, nil
}
