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

	checkpoint Checkpoint // the runtime's; nil outside a runtime
	marked     bool
}

// MarkDelivered records the event in its runtime's Checkpoint at once,
// before the batch is done. A destination that delivers one event at a time
// and has no idempotency of its own (a chat message, a plain webhook) calls
// it on each success: a crash in the middle of a batch then sends again only
// the events not yet recorded. An event recorded here is not recorded a
// second time when the batch is done; one whose record failed is, and that
// failure is the batch's. Outside a runtime (a test) it does nothing.
func (e *Event) MarkDelivered(ctx context.Context) error {
	if e.checkpoint == nil {
		return nil
	}
	if err := e.checkpoint.Mark(ctx, []string{CheckpointKey(e.Feedback)}); err != nil {
		return err
	}
	e.marked = true
	return nil
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
