// Package crm is what the CRM destinations (HubSpot, Salesforce) share:
// the feedback fields they write on a contact, the guard that never lets
// an older event overwrite a newer one, the engine that delivers a batch
// (field updates, detractor tasks, unsubscribes), and the record of each
// unsubscribe's propagation.
//
// A CRM destination implements Writer; Engine.Deliver does the rest:
//
//   - an unsubscribe (KIND_UNSUBSCRIBED) opts the email out (Writer.OptOut)
//     and its outcome — applied, already opted out, unknown contact, or
//     refused — is recorded once (Recorder) on closedloop.unsubscribes.v1
//     and the audit topic;
//   - any other event updates the respondent's contact (Writer.Update) when
//     it is the newest the contact has seen (Guard), then, when the
//     destination's task rule holds, adds a task or note (Writer.Task).
package crm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Field is one feedback field a CRM destination writes on a contact.
type Field struct {
	// Key names it in the pipeline file's field mapping.
	Key   string
	Label string
	// Type is its kind: "number", "string", "text" (long), "datetime".
	Type  string
	Value func(f *feedbackv1.FeedbackEvent) string
}

// FeedbackAt is the field holding the time of the feedback the contact's
// fields come from.
const FeedbackAt = "feedback_at"

// Fields are the feedback fields, in the order the docs list them
// (docs/destinations.md, "CRM field mapping").
var Fields = []Field{
	{Key: "last_score", Label: "Last feedback score", Type: "number", Value: func(f *feedbackv1.FeedbackEvent) string {
		if f.GetScore() == nil {
			return ""
		}
		return strconv.FormatFloat(f.GetScore().GetValue(), 'f', -1, 64)
	}},
	{Key: "score_scale", Label: "Feedback score scale", Type: "string", Value: func(f *feedbackv1.FeedbackEvent) string {
		if s := f.GetScore(); s != nil && s.Max > 0 {
			return strconv.FormatFloat(s.Min, 'f', -1, 64) + "-" + strconv.FormatFloat(s.Max, 'f', -1, 64)
		}
		return ""
	}},
	{Key: "segment", Label: "Feedback segment", Type: "string", Value: func(f *feedbackv1.FeedbackEvent) string {
		if f.Segment == feedbackv1.Segment_SEGMENT_UNSPECIFIED {
			return ""
		}
		return strings.ToLower(strings.TrimPrefix(f.Segment.String(), "SEGMENT_"))
	}},
	{Key: "survey", Label: "Feedback survey", Type: "string", Value: func(f *feedbackv1.FeedbackEvent) string {
		if n := f.GetSurvey().GetName(); n != "" {
			return n
		}
		if id := f.GetSurvey().GetId(); id != "" {
			return id
		}
		if t := f.GetSurvey().GetType(); t != feedbackv1.SurveyType_SURVEY_TYPE_UNSPECIFIED {
			return strings.ToLower(strings.TrimPrefix(t.String(), "SURVEY_TYPE_"))
		}
		return ""
	}},
	{Key: "comment", Label: "Last feedback comment", Type: "text", Value: func(f *feedbackv1.FeedbackEvent) string { return f.GetComment() }},
	{Key: FeedbackAt, Label: "Last feedback at", Type: "datetime", Value: func(f *feedbackv1.FeedbackEvent) string {
		return FeedbackTime(f).UTC().Format("2006-01-02T15:04:05.000Z")
	}},
	{Key: "response_link", Label: "Last feedback response", Type: "string", Value: func(f *feedbackv1.FeedbackEvent) string { return f.Permalink }},
	{Key: "account_tier", Label: "Account tier (closedloop)", Type: "string", Value: func(f *feedbackv1.FeedbackEvent) string { return Lookup(f, "tier") }},
	{Key: "event_id", Label: "Last feedback event (closedloop)", Type: "string", Value: func(f *feedbackv1.FeedbackEvent) string { return f.EventId }},
}

// Lookup is the enricher's lookup field name, "" when no lookup has it.
func Lookup(f *feedbackv1.FeedbackEvent, name string) string {
	for _, l := range f.GetEnrichment().GetLookups() {
		if v, ok := l.GetFields()[name]; ok {
			return fmt.Sprint(v.AsInterface())
		}
	}
	return ""
}

// FieldNames maps each field key to the CRM's field name: def(key) unless
// overrides names it ("" in overrides: the field is not written). An
// override of no known field is an error naming it.
func FieldNames(overrides map[string]string, def func(Field) string) (map[string]string, error) {
	known := map[string]bool{}
	out := map[string]string{}
	for _, f := range Fields {
		known[f.Key] = true
		out[f.Key] = def(f)
	}
	for k, v := range overrides {
		if !known[k] {
			return nil, fmt.Errorf("fields: no feedback field %q (known: %s)", k, strings.Join(keys(), ", "))
		}
		if v == "" {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	if _, ok := out[FeedbackAt]; !ok {
		return nil, errors.New("fields: feedback_at cannot be left out: it is how a contact's fields are kept at the newest feedback")
	}
	return out, nil
}

func keys() []string {
	out := make([]string, len(Fields))
	for i, f := range Fields {
		out[i] = f.Key
	}
	return out
}

// Values are the contact's field values for f under names (CRM field →
// value); fields without a value are left out, so an event without a
// comment does not clear the last one.
func Values(f *feedbackv1.FeedbackEvent, names map[string]string) map[string]string {
	out := make(map[string]string, len(names))
	for _, fl := range Fields {
		name, ok := names[fl.Key]
		if !ok {
			continue
		}
		if v := fl.Value(f); v != "" {
			out[name] = v
		}
	}
	return out
}

// Email is the event's contact key: the respondent's email, trimmed and
// lower-cased ("" when it has none).
func Email(f *feedbackv1.FeedbackEvent) string {
	return strings.ToLower(strings.TrimSpace(f.GetRespondent().GetEmail()))
}

// FeedbackTime is when the feedback the event carries was given: its
// version (a response's last update), else when it occurred, else when it
// was received.
func FeedbackTime(f *feedbackv1.FeedbackEvent) time.Time {
	switch {
	case f.Version != nil:
		return f.Version.AsTime()
	case f.OccurredAt != nil:
		return f.OccurredAt.AsTime()
	}
	return f.GetReceivedAt().AsTime()
}

// Version orders the events of a contact: the feedback time, then the
// event id (so two events of one instant have one order everywhere).
type Version struct {
	At      int64 // Unix microseconds
	EventID string
}

// VersionOf is the event's version.
func VersionOf(f *feedbackv1.FeedbackEvent) Version {
	return Version{At: FeedbackTime(f).UnixMicro(), EventID: f.EventId}
}

// Newer says whether v is after o.
func (v Version) Newer(o Version) bool {
	return v.At > o.At || v.At == o.At && v.EventID > o.EventID
}

func (v Version) String() string { return strconv.FormatInt(v.At, 10) + "|" + v.EventID }

// Update is one contact's field update: the newest event of the batch
// for its email.
type Update struct {
	Event  *sink.Event
	Email  string
	Fields map[string]string
	// ID is the CRM's id of the contact once Update wrote it (for the task).
	ID string
}

// Task is a detractor's task (or note) on the contact Update wrote.
type Task struct {
	Update   *Update
	Subject  string
	Body     string
	Priority string // urgent, high, normal, low
	// Key identifies the task across retries (the event's): the CRM
	// upserts on it, so a retry never makes a second one.
	Key string
}

// OptOut is one unsubscribe to apply.
type OptOut struct {
	Event *sink.Event
	Email string
}

// Outcome is what a CRM did with an OptOut.
type Outcome struct {
	Result sinkv1.PropagationResult
	Detail string
}

// Writer is a CRM destination's API calls. Each returns one error per
// item (nil slice: all done), classified as sink errors: Permanent for a
// record the CRM refuses, Retryable otherwise.
type Writer interface {
	// Update writes each update's fields on its contact (creating it when
	// the CRM upserts) and sets Update.ID.
	Update(ctx context.Context, ups []*Update) []error
	// Task adds each task to its contact.
	Task(ctx context.Context, tasks []*Task) []error
	// OptOut opts each email out; a nil error comes with its outcome.
	OptOut(ctx context.Context, outs []*OptOut) ([]Outcome, []error)
}
