// Package enrich is the enricher's record handler. In this version it
// validates each FeedbackEvent and passes it on to the standard enriched lane
// keyed by subject; CRM lookups and routing rules plug in here.
package enrich

import (
	"context"
	"fmt"

	"github.com/closedloop/closedloop/libs/feedback"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/segmentio/kafka-go"
)

// Producer is the part of kafkaio.Producer the handler needs.
type Producer interface {
	Produce(ctx context.Context, recs ...kafkaio.Record) error
}

// Handler forwards normalized events to the enriched topic.
type Handler struct {
	Producer      Producer
	EnrichedTopic string
}

// Handle implements kafkaio.Handler. A redelivered record is forwarded
// again; sinks deduplicate on event_id.
func (h *Handler) Handle(ctx context.Context, m kafka.Message) error {
	if _, err := feedback.Decode(m.Value); err != nil {
		return err
	}
	if err := h.Producer.Produce(ctx, kafkaio.Record{Topic: h.EnrichedTopic, Key: m.Key, Value: m.Value}); err != nil {
		return fmt.Errorf("forward to %s: %w", h.EnrichedTopic, err)
	}
	return nil
}
