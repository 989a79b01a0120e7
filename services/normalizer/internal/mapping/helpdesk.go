package mapping

import (
	"strings"

	"github.com/segmentio/encoding/json"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/providers"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// The helpdesks' ticket webhooks become follow-ups (KIND_FOLLOW_UP): the
// subject is the ticket, follow_up links it to the response the helpdesk
// destination opened it for (Zendesk's external_id, Freshdesk's custom
// field hold the response's key) and says where the ticket is: created, an
// agent's first public reply, solved, closed, reopened. The warehouse's
// loop_closure view joins them to the detractors. The whole body is kept in
// properties, as every mapping does.

// Zendesk maps Zendesk's event webhooks ({type, id, time, subject,
// detail, event}; docs: webhooks/event-types/ticket-events): a
// zen:event-type:ticket.* event with a ticket id is a follow-up; anything
// else (user, organization, article events) an engagement event.
type Zendesk struct{}

type zdComment struct {
	IsPublic *bool `json:"is_public"`
	Author   struct {
		IsStaff *bool `json:"is_staff"`
	} `json:"author"`
}

// Map implements Mapper.
func (Zendesk) Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	o, ev, c, err := begin(raw, "type", "time")
	if err != nil {
		return nil, err
	}
	if err := Flatten("", raw.Body, ev.Properties); err != nil {
		return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
	}
	detail := o.sub("detail")
	ticket := detail.str("id")
	typ, isTicket := strings.CutPrefix(ev.ProviderEventType, "zen:event-type:ticket.")
	if !isTicket || ticket == "" {
		ev.Kind, ev.Subject = feedbackv1.Kind_KIND_ENGAGEMENT, eventSubject(raw)
		ev.Quality = &feedbackv1.Quality{CoercedFields: c.fields}
		return ev, nil
	}
	fu := &feedbackv1.FollowUp{System: providers.MapZendesk, TicketId: ticket, ResponseKey: detail.str("external_id"), Status: detail.str("status")}
	if fu.TicketCreatedAt, err = c.isoTime("detail.created_at", detail["created_at"]); err != nil {
		return nil, err
	}
	event := o.sub("event")
	switch typ {
	case "created":
		fu.Stage = feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_CREATED
	case "comment_added":
		var cm zdComment
		if err := decodeJSON(event["comment"], &cm); err != nil && !isNull(event["comment"]) {
			return nil, kafkaio.Permanentf(ReasonInvalidField, "event.comment is not a comment object: %v", err)
		}
		fu.Stage = feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_UPDATED
		if cm.IsPublic != nil && *cm.IsPublic && cm.Author.IsStaff != nil && *cm.Author.IsStaff {
			fu.Stage = feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_AGENT_REPLIED
		}
	case "status_changed":
		cur, prev := zdStatus(event["current"]), zdStatus(event["previous"])
		if cur != "" {
			fu.Status = cur
		}
		fu.Stage = statusStage(cur, prev, zendeskStatuses)
	default:
		fu.Stage = feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_UPDATED
	}
	var tags []string
	if raw, ok := detail["tags"]; ok && !isNull(raw) {
		if decodeJSON(raw, &tags) != nil {
			c.mark("detail.tags")
			tags = nil
		}
	}
	ev.Tags = tags
	ev.Kind, ev.FollowUp = feedbackv1.Kind_KIND_FOLLOW_UP, fu
	ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_TICKET, Id: ticket}
	ev.Quality = &feedbackv1.Quality{CoercedFields: c.fields}
	return ev, nil
}

// zdStatus reads a status change's side: a string ("SOLVED") or, in some
// events, an object {"status": "SOLVED"}.
func zdStatus(raw json.RawMessage) string {
	if s := idString(raw); s != "" {
		return s
	}
	o, _ := decodeObj(raw)
	return o.str("status")
}

// A helpdesk's statuses that close the loop, by lower-cased name or number.
type statusSet struct{ solved, closed map[string]bool }

var (
	zendeskStatuses = statusSet{solved: map[string]bool{"solved": true}, closed: map[string]bool{"closed": true}}
	// Freshdesk: 4 Resolved, 5 Closed (by number in the API, by name in
	// automation placeholders).
	freshdeskStatuses = statusSet{solved: map[string]bool{"resolved": true, "4": true}, closed: map[string]bool{"closed": true, "5": true}}
)

// statusStage is the stage a status change reaches: solved, closed,
// reopened (from solved or closed to anything else), else updated.
func statusStage(cur, prev string, s statusSet) feedbackv1.FollowUpStage {
	cur, prev = strings.ToLower(strings.TrimSpace(cur)), strings.ToLower(strings.TrimSpace(prev))
	switch {
	case s.solved[cur]:
		return feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_SOLVED
	case s.closed[cur]:
		return feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_CLOSED
	case cur != "" && (s.solved[prev] || s.closed[prev]):
		return feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_REOPENED
	}
	return feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_UPDATED
}

// Freshdesk maps Freshdesk's automation webhooks. Their body is whatever
// the rule's admin writes; docs/destinations.md gives the template read
// here (optionally wrapped in {"freshdesk_webhook": …}, the shape of
// Freshdesk's simple webhooks):
//
//	{"event": "ticket_resolved", "ticket_id": "{{ticket.id}}",
//	 "ticket_status": "{{ticket.status}}",
//	 "closedloop_response": "{{ticket.cf_closedloop_response}}",
//	 "ticket_created_at": "…", "time": "…"}
//
// event is a constant per rule: ticket_created, agent_reply,
// ticket_resolved, ticket_closed, ticket_reopened or ticket_updated; without
// it the stage follows the status (Resolved/4 solved, Closed/5 closed). The
// response key is also read from ticket_cf_closedloop_response (the simple
// webhook's name of the custom field). A body without a ticket id is an
// engagement event.
type Freshdesk struct{}

var freshdeskEvents = map[string]feedbackv1.FollowUpStage{
	"ticket_created":  feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_CREATED,
	"agent_reply":     feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_AGENT_REPLIED,
	"ticket_resolved": feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_SOLVED,
	"ticket_closed":   feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_CLOSED,
	"ticket_reopened": feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_REOPENED,
	"ticket_updated":  feedbackv1.FollowUpStage_FOLLOW_UP_STAGE_UPDATED,
}

// Map implements Mapper.
func (Freshdesk) Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	o, err := envelope(raw)
	if err != nil {
		return nil, err
	}
	if w := o.sub("freshdesk_webhook"); w != nil {
		o = w
	}
	ev := newEvent(raw)
	if ev.ProviderEventType == "" {
		ev.ProviderEventType = o.str("event")
	}
	if err := Flatten("", raw.Body, ev.Properties); err != nil {
		return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
	}
	c := &coercer{}
	t, err := c.isoTime("time", o["time"])
	if err != nil {
		return nil, err
	}
	when(ev, t, raw)
	ticket := o.str("ticket_id")
	if ticket == "" {
		ev.Kind, ev.Subject = feedbackv1.Kind_KIND_ENGAGEMENT, eventSubject(raw)
		if raw.Test {
			ev.Kind = feedbackv1.Kind_KIND_TEST
		}
		ev.Quality = &feedbackv1.Quality{CoercedFields: c.fields}
		return ev, nil
	}
	fu := &feedbackv1.FollowUp{System: providers.MapFreshdesk, TicketId: ticket,
		ResponseKey: firstOf(o, "closedloop_response", "ticket_cf_closedloop_response"), Status: o.str("ticket_status")}
	var created *timestamppb.Timestamp
	if created, err = c.isoTime("ticket_created_at", o["ticket_created_at"]); err != nil {
		return nil, err
	}
	fu.TicketCreatedAt = created
	stage, ok := freshdeskEvents[strings.ToLower(ev.ProviderEventType)]
	if !ok {
		stage = statusStage(fu.Status, "", freshdeskStatuses)
	}
	fu.Stage = stage
	ev.Kind, ev.FollowUp = feedbackv1.Kind_KIND_FOLLOW_UP, fu
	ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_TICKET, Id: ticket}
	ev.Quality = &feedbackv1.Quality{CoercedFields: c.fields}
	return ev, nil
}
