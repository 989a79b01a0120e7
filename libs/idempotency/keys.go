package idempotency

import (
	"strconv"

	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// EventKeys are the ids an event is deduplicated by (within its source):
// its event id, and its subject version (kind-agnostic and typed, so a
// backfilled copy of a webhook response is caught while a person id never
// collides with a response id). A helpdesk's follow-ups have only their
// event id: a ticket's events are separate facts, not versions of one, and
// several share a time (the comment and the status change of one update).
// The normalizer dedupes by them; reconciliation asks whether the pipeline
// has seen an item by them.
func EventKeys(ev *feedbackv1.FeedbackEvent) []string {
	ids := []string{"evt:" + ev.EventId}
	if s := ev.GetSubject(); s.GetId() != "" && ev.Version != nil && ev.Kind != feedbackv1.Kind_KIND_FOLLOW_UP {
		ids = append(ids, "subj:"+strconv.Itoa(int(s.Type))+":"+s.Id+":"+strconv.FormatInt(ev.Version.AsTime().UnixNano(), 10))
	}
	return ids
}
