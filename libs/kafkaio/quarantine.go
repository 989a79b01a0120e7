package kafkaio

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Headers a quarantined record carries besides its original ones.
const (
	HeaderQuarantineReason    = "closedloop-quarantine-reason"
	HeaderQuarantineError     = "closedloop-quarantine-error"
	HeaderQuarantineTopic     = "closedloop-source-topic"
	HeaderQuarantinePartition = "closedloop-source-partition"
	HeaderQuarantineOffset    = "closedloop-source-offset"
	HeaderQuarantineGroup     = "closedloop-consumer-group"
	// HeaderQuarantineValueOmitted (the original value's size) is set when the
	// record and the quarantine headers did not fit in the quarantine topic:
	// the value stays at its source topic, partition and offset.
	HeaderQuarantineValueOmitted = "closedloop-quarantine-value-omitted"
)

// quarantine writes the record with the reason to the quarantine topic,
// retrying until it is durable or the consumer stops.
func (c *Consumer) quarantine(stop, work context.Context, m kafka.Message, reason string, cause error) error {
	headers := append(append([]kafka.Header(nil), m.Headers...),
		kafka.Header{Key: HeaderQuarantineReason, Value: []byte(reason)},
		kafka.Header{Key: HeaderQuarantineError, Value: []byte(truncate(cause.Error(), 1024))},
		kafka.Header{Key: HeaderQuarantineTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderQuarantinePartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafka.Header{Key: HeaderQuarantineOffset, Value: []byte(itoa(m.Offset))},
		kafka.Header{Key: HeaderQuarantineGroup, Value: []byte(c.cfg.GroupID)},
	)
	rec := Record{Topic: c.cfg.QuarantineTopic, Key: m.Key, Value: m.Value, Headers: headers}
	for attempt := 1; ; attempt++ {
		err := c.cfg.Quarantine.Produce(work, rec)
		if err == nil {
			break
		}
		if errors.Is(err, ErrRecordTooLarge) && rec.Value != nil {
			// Never block the partition on its own quarantine: keep the
			// coordinates and the reason, leave the value where it is.
			rec.Value = nil
			rec.Headers = append(rec.Headers, kafka.Header{Key: HeaderQuarantineValueOmitted, Value: []byte(strconv.Itoa(len(m.Value)))})
			continue
		}
		if errors.Is(err, ErrRecordTooLarge) && len(rec.Headers) > len(m.Headers) && len(m.Headers) > 0 {
			// Still too large: the original headers go too, ours stay.
			rec.Headers = rec.Headers[len(m.Headers):]
			continue
		}
		wait := backoff(attempt, c.cfg.RetryBackoffMax)
		c.cfg.Log.Warn("quarantine produce failed; retrying", "topic", m.Topic, "offset", m.Offset, "error", err.Error(), "retry_in", wait.String())
		select {
		case <-stop.Done():
			return stop.Err()
		case <-time.After(wait):
		}
	}
	c.quar.Add(work, 1, metric.WithAttributes(attribute.String("topic", m.Topic), attribute.String("group", c.cfg.GroupID), attribute.String("reason", reason)))
	if s := c.stats[m.Topic]; s != nil {
		s.Quarantined.Add(1)
	}
	c.cfg.Log.Warn("record quarantined", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "reason", reason, "error", cause.Error())
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
