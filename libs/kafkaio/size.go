package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// DefaultMaxMessageBytes is Kafka's default max.message.bytes (message.max.bytes
// on the broker): 1 MiB plus the 12 bytes of a log entry header.
const DefaultMaxMessageBytes = 1048588

// batchOverhead is the size of a record batch (v2) without its records: what a
// broker adds to the records before it compares with max.message.bytes.
const batchOverhead = 61

// EncodedSize is an upper bound of the bytes a broker measures for a batch
// holding only this record (batch header, record framing with varints at their
// largest, key, value and headers). A record whose EncodedSize is at most the
// topic's max.message.bytes is never refused as too large.
func EncodedSize(key, value []byte, headers []kafka.Header) int {
	return batchOverhead + recordSize(key, value, headers)
}

// recordSize bounds one record inside a batch: length, attributes, timestamp
// and offset deltas, key and value lengths (varints, at most 5 or 10 bytes),
// the header count, and each header's two lengths.
func recordSize(key, value []byte, headers []kafka.Header) int {
	n := 5 + 1 + 10 + 5 + 5 + len(key) + 5 + len(value) + 5
	for _, h := range headers {
		n += 5 + len(h.Key) + 5 + len(h.Value)
	}
	return n
}

// TopicMaxMessageBytes reads the effective max.message.bytes of each topic
// from the brokers (the topic's own setting, else the broker's
// message.max.bytes). The sizes a service accepts are computed from it
// instead of a separate guess.
func TopicMaxMessageBytes(ctx context.Context, brokers []string, topics ...string) (map[string]int, error) {
	client := NewClient(brokers, 5*time.Second)
	defer client.Transport.(*kafka.Transport).CloseIdleConnections()
	req := &kafka.DescribeConfigsRequest{}
	for _, t := range topics {
		req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: t, ConfigNames: []string{"max.message.bytes"}})
	}
	resp, err := client.DescribeConfigs(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("describe configs of %s: %w", strings.Join(topics, ", "), err)
	}
	out := make(map[string]int, len(topics))
	var errs []error
	for _, r := range resp.Resources {
		if r.Error != nil {
			errs = append(errs, fmt.Errorf("describe configs of %s: %w", r.ResourceName, r.Error))
			continue
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName != "max.message.bytes" {
				continue
			}
			n, err := strconv.Atoi(e.ConfigValue)
			if err != nil || n <= batchOverhead {
				errs = append(errs, fmt.Errorf("topic %s: max.message.bytes=%q is not a usable size", r.ResourceName, e.ConfigValue))
				continue
			}
			out[r.ResourceName] = n
		}
	}
	for _, t := range topics {
		if _, ok := out[t]; !ok && len(errs) == 0 {
			errs = append(errs, fmt.Errorf("topic %s: the broker did not report max.message.bytes", t))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
