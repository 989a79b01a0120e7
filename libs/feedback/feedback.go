// Package feedback holds helpers for consumers of FeedbackEvent records.
package feedback

import (
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Decode reads a FeedbackEvent record value. A value that is not a
// FeedbackEvent, or one without its event id or subject, is a permanent
// error (reason kafkaio.ReasonUndecodableRecord or ReasonMissingID).
func Decode(value []byte) (*feedbackv1.FeedbackEvent, error) {
	var ev feedbackv1.FeedbackEvent
	if err := proto.Unmarshal(value, &ev); err != nil {
		return nil, kafkaio.Permanent(kafkaio.ReasonUndecodableRecord, err)
	}
	if ev.EventId == "" || ev.GetSubject().GetId() == "" {
		return nil, kafkaio.Permanentf(kafkaio.ReasonMissingID, "FeedbackEvent without event_id or subject")
	}
	return &ev, nil
}

// TestEventPrefix starts the event id of the test events the admin service
// sends through the ingress (closedloopctl test-event); the normalizer
// flags such events test. The id is inside the signed body, so only a
// holder of the source's signing secret can send one.
const TestEventPrefix = "closedloop-test-"
