package sink

import (
	"context"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/libs/expr"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Event is one event handed to a Destination.
type Event struct {
	// Ctx carries the event's trace (its consumer span).
	Ctx      context.Context
	Feedback *feedbackv1.FeedbackEvent
	// Value is the serialized FeedbackEvent as consumed.
	Value []byte
	// Attempt is 1 on the first delivery of this event, 2 on its first retry, ...
	Attempt int
}

// Destination delivers events to one place.
type Destination interface {
	// Deliver delivers the events (in order, at most Config.MaxBatch) and
	// returns nil when every one reached the destination, else one error per
	// event (nil for those delivered). Errors are classified with Classify:
	// return Permanent for data the destination rejects, HTTPStatus for
	// HTTP answers, Retryable with the destination's Retry-After.
	Deliver(ctx context.Context, events []*Event) []error
}

// Errors is errs, or nil when every one is nil: what Deliver (and a
// batch handler) returns when all went through.
func Errors(errs []error) []error {
	for _, e := range errs {
		if e != nil {
			return errs
		}
	}
	return nil
}

// Matcher decides whether an event is for this sink (an *expr.Bool).
type Matcher interface {
	Eval(*feedbackv1.FeedbackEvent) (bool, error)
}

// HeaderDestination on a record of a sink's replay topic names the one
// destination (Runner.Name) that is to deliver it; the others skip it.
const HeaderDestination = "closedloop-destination"

func header(m kafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// FilterOf is the Matcher of a compiled expression; nil (deliver every
// event) when there is none — never a non-nil Matcher holding a nil one.
func FilterOf(b *expr.Bool) Matcher {
	if b == nil {
		return nil
	}
	return b
}
