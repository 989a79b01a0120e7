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
	req := make([]kafka.OffsetRequest, partitions)
	for i := range req {
		req[i] = kafka.LastOffsetOf(i)
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: req}})
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		sum += p.LastOffset
	}
	return sum, nil
}
