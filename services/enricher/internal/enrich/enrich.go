// Package enrich is the enricher's record handler. In this version it
// validates each FeedbackEvent and passes it on to the standard enriched lane
// keyed by subject; CRM lookups and routing rules plug in here.
package enrich

import (
	"context"
	"fmt"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
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
	var ev feedbackv1.FeedbackEvent
	if err := proto.Unmarshal(m.Value, &ev); err != nil {
		return kafkaio.Permanent("undecodable_record", err)
	}
	if ev.EventId == "" || ev.GetSubject().GetId() == "" {
		return kafkaio.Permanentf("missing_required_id", "event without event_id or subject")
	}
	if err := h.Producer.Produce(ctx, kafkaio.Record{Topic: h.EnrichedTopic, Key: m.Key, Value: m.Value}); err != nil {
		return fmt.Errorf("forward to %s: %w", h.EnrichedTopic, err)
	}
	return nil
}
