package mapping

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// envelope decodes a JSON object body or quarantines it as malformed.
func envelope(raw *feedbackv1.RawWebhook) (obj, error) {
	o, ok := decodeObj(raw.Body)
	if !ok {
		var probe any
		if err := decodeJSON(raw.Body, &probe); err != nil {
			return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
		}
		return nil, kafkaio.Permanentf(ReasonMalformedJSON, "the body is JSON but not an object")
	}
	return o, nil
}

func newEvent(raw *feedbackv1.RawWebhook) *feedbackv1.FeedbackEvent {
	return &feedbackv1.FeedbackEvent{ProviderEventType: raw.EventType, Properties: map[string]*structpb.Value{}}
}

// begin is the common start of the envelope mappers: decode the object,
// take the event type from the ingress (else from typeField), and the time
// from timeField (ISO 8601 documented; else the receive time).
func begin(raw *feedbackv1.RawWebhook, typeField, timeField string) (obj, *feedbackv1.FeedbackEvent, *coercer, error) {
	o, err := envelope(raw)
	if err != nil {
		return nil, nil, nil, err
	}
	ev := newEvent(raw)
	if ev.ProviderEventType == "" {
		ev.ProviderEventType = o.str(typeField)
	}
	c := &coercer{}
	t, err := c.isoTime(timeField, o[timeField])
	if err != nil {
		return nil, nil, nil, err
	}
	when(ev, t, raw)
	return o, ev, c, nil
}

// eventSubject makes the event itself the subject, for events about nothing
// with an id of its own.
func eventSubject(raw *feedbackv1.RawWebhook) *feedbackv1.Subject {
	return &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_EVENT, Id: raw.EventId}
}

// when sets occurred_at and version, falling back to the receive time.
func when(ev *feedbackv1.FeedbackEvent, t *timestamppb.Timestamp, raw *feedbackv1.RawWebhook) {
	if t == nil {
		t = raw.ReceivedAt
	}
	ev.OccurredAt, ev.Version = t, t
}

// Generic maps providers without a mapping of their own: an engagement event
// (a test event when the ingress marked it) whose subject is the event,
// with the whole body flattened into properties — nothing is dropped.
type Generic struct{}

// Map implements Mapper.
func (Generic) Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	ev := newEvent(raw)
	if err := Flatten("", raw.Body, ev.Properties); err != nil {
		return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
	}
	ev.Kind = feedbackv1.Kind_KIND_ENGAGEMENT
	if raw.Test {
		ev.Kind = feedbackv1.Kind_KIND_TEST
	}
	ev.Subject = eventSubject(raw)
	when(ev, nil, raw)
	ev.Quality = &feedbackv1.Quality{}
	return ev, nil
}

// DelightLoop maps DelightLoop's gifting events ({"event", "timestamp",
// "data"}): engagement events about the recipient, campaign or contact
// list, with the whole envelope flattened into properties.
type DelightLoop struct{}

// Map implements Mapper.
func (DelightLoop) Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	o, ev, c, err := begin(raw, "event", "timestamp")
	if err != nil {
		return nil, err
	}
	if err := Flatten("", raw.Body, ev.Properties); err != nil {
		return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
	}
	ev.Kind = feedbackv1.Kind_KIND_ENGAGEMENT
	data := o.sub("data")
	switch {
	case data.str("recipientId") != "":
		ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_PERSON, Id: data.str("recipientId")}
		ev.Respondent = &feedbackv1.Respondent{Id: data.str("recipientId"), Email: data.str("email")}
	case strings.HasPrefix(ev.ProviderEventType, "contact_list.") && firstOf(data, "contactListId", "id") != "":
		ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_CONTACT_LIST, Id: firstOf(data, "contactListId", "id")}
	case firstOf(data, "campaignId", "id") != "":
		ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_CAMPAIGN, Id: firstOf(data, "campaignId", "id")}
	default:
		ev.Subject = eventSubject(raw)
	}
	ev.Quality = &feedbackv1.Quality{CoercedFields: c.fields}
	return ev, nil
}

func firstOf(o obj, keys ...string) string {
	for _, k := range keys {
		if v := o.str(k); v != "" {
			return v
		}
	}
	return ""
}

// ChatToSurvey maps ChatToSurvey's conversational surveys ({"id", "event",
// "created_at", "data"}). A completed conversation carries all responses:
// an "nps" answer becomes the score (its value arrives as a string), the
// first "text" answer the comment, every answer an Answer. The shape of the
// responses list is an assumption: the provider says only that the event
// carries all responses.
type ChatToSurvey struct{}

// Map implements Mapper.
func (ChatToSurvey) Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	o, ev, c, err := begin(raw, "event", "created_at")
	if err != nil {
		return nil, err
	}
	data := o.sub("data")
	switch ev.ProviderEventType {
	case "conversation.completed":
		ev.Kind = feedbackv1.Kind_KIND_RESPONSE_COMPLETED
	case "conversation.started":
		ev.Kind = feedbackv1.Kind_KIND_RESPONSE_STARTED
	case "question_response.upserted":
		ev.Kind = feedbackv1.Kind_KIND_ANSWER_UPSERTED
	case "test.webhook":
		ev.Kind, ev.Test = feedbackv1.Kind_KIND_TEST, true
	default:
		ev.Kind = feedbackv1.Kind_KIND_ENGAGEMENT
	}
	if conv := data.sub("conversation"); conv.str("id") != "" {
		ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_CONVERSATION, Id: conv.str("id")}
		ev.Quality = &feedbackv1.Quality{Incomplete: ev.Kind != feedbackv1.Kind_KIND_RESPONSE_COMPLETED}
	} else if ev.Kind == feedbackv1.Kind_KIND_TEST || ev.Kind == feedbackv1.Kind_KIND_ENGAGEMENT {
		ev.Subject = eventSubject(raw)
	} else {
		return nil, kafkaio.Permanentf(ReasonMissingID, "data.conversation.id is missing")
	}
	if sv := data.sub("survey"); sv != nil {
		ev.Survey = &feedbackv1.Survey{Id: sv.str("id"), Name: sv.str("name"), Type: feedbackv1.SurveyType_SURVEY_TYPE_OTHER}
	}
	if r := data.sub("respondent"); r != nil {
		ev.Respondent = &feedbackv1.Respondent{Id: r.str("id"), Name: joinName(r.str("first_name"), r.str("last_name")), Phone: r.str("phone"), Email: r.str("email")}
	}
	var responses []obj
	_ = decodeJSON(data["responses"], &responses)
	for i, r := range responses {
		ans := &feedbackv1.Answer{QuestionId: r.str("question_id"), QuestionText: r.str("question"), Type: r.str("answer_type"), Value: r.str("answer")}
		ev.Answers = append(ev.Answers, ans)
		switch strings.ToLower(ans.Type) {
		case "nps":
			v, ok, err := c.number("responses."+strconv.Itoa(i)+".answer", r["answer"])
			if err != nil {
				return nil, err
			}
			if ok && ev.Score == nil {
				st := feedbackv1.SurveyType_SURVEY_TYPE_NPS
				if ev.Score, err = scoreOnScale(st, v); err != nil {
					return nil, err
				}
				ev.Segment = Segment(st, v)
				if ev.Survey == nil {
					ev.Survey = &feedbackv1.Survey{}
				}
				ev.Survey.Type, ev.Survey.ProviderType = st, "nps"
			}
		case "text":
			if ev.Comment == nil {
				s := ans.Value
				ev.Comment = &s
			}
		}
	}
	for _, k := range []string{"conversation", "metadata"} {
		if !isNull(data[k]) {
			if err := Flatten("data."+k, data[k], ev.Properties); err != nil {
				return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
			}
		}
	}
	if ev.Quality == nil {
		ev.Quality = &feedbackv1.Quality{}
	}
	ev.Quality.CoercedFields = c.fields
	return ev, nil
}

// FeedBackPro maps FeedBackPro's widget events ({"event", "id",
// "timestamp", "data"}): rating_submitted (1–5 stars), new_feedback (a
// comment), nps_calculated (score with the provider's own segment),
// widget_dismissed, and its test event. Every data field is kept under
// "data." in properties; null stays null.
type FeedBackPro struct{}

// Map implements Mapper.
func (FeedBackPro) Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	o, ev, c, err := begin(raw, "event", "timestamp")
	if err != nil {
		return nil, err
	}
	data := o.sub("data")
	if !isNull(o["data"]) {
		if err := Flatten("data", o["data"], ev.Properties); err != nil {
			return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
		}
	}
	ev.Subject = eventSubject(raw)
	if data.str("customer_id") != "" || data.str("email") != "" || data.str("browser_locale") != "" {
		ev.Respondent = &feedbackv1.Respondent{Id: data.str("customer_id"), Email: data.str("email"), Locale: data.str("browser_locale")}
	}
	score := func(st feedbackv1.SurveyType) error {
		v, ok, err := c.number("data.score", data["score"])
		if err != nil || !ok {
			return err
		}
		if ev.Score, err = scoreOnScale(st, v); err != nil {
			return err
		}
		ev.Survey = &feedbackv1.Survey{Type: st}
		ev.Segment = Segment(st, v)
		return nil
	}
	switch ev.ProviderEventType {
	case "rating_submitted":
		ev.Kind = feedbackv1.Kind_KIND_RATING
		err = score(feedbackv1.SurveyType_SURVEY_TYPE_FIVE_STAR)
	case "new_feedback":
		ev.Kind = feedbackv1.Kind_KIND_COMMENT
		ev.Comment = data.strPtr("comment")
	case "nps_calculated":
		ev.Kind = feedbackv1.Kind_KIND_NPS_CLOSED
		if id := data.str("response_id"); id != "" {
			ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: id}
		}
		if err = score(feedbackv1.SurveyType_SURVEY_TYPE_NPS); err == nil {
			// The provider computes its own segment; keep it when it names one.
			switch strings.ToLower(data.str("segment")) {
			case "promoter":
				ev.Segment = feedbackv1.Segment_SEGMENT_PROMOTER
			case "passive":
				ev.Segment = feedbackv1.Segment_SEGMENT_PASSIVE
			case "detractor":
				ev.Segment = feedbackv1.Segment_SEGMENT_DETRACTOR
			}
		}
	case "widget_dismissed":
		ev.Kind = feedbackv1.Kind_KIND_SURVEY_DISMISSED
	case "test", "test_event":
		ev.Kind, ev.Test = feedbackv1.Kind_KIND_TEST, true
	default:
		ev.Kind = feedbackv1.Kind_KIND_ENGAGEMENT
	}
	if err != nil {
		return nil, err
	}
	ev.Quality = &feedbackv1.Quality{CoercedFields: c.fields}
	return ev, nil
}
