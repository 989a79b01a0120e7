package mapping

import (
	"github.com/segmentio/encoding/json"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Delighted maps Delighted's webhooks: survey_response.created/updated and
// unsubscribe.created in the envelope {"event_type","event_id","event_data"}.
type Delighted struct{}

type delightedEnvelope struct {
	EventType string          `json:"event_type"`
	EventID   string          `json:"event_id"`
	EventData json.RawMessage `json:"event_data"`
}

type delightedResponse struct {
	ID                json.RawMessage `json:"id"`
	Person            json.RawMessage `json:"person"`
	SurveyType        string          `json:"survey_type"`
	Score             json.RawMessage `json:"score"`
	Comment           *string         `json:"comment"`
	Permalink         string          `json:"permalink"`
	CreatedAt         json.RawMessage `json:"created_at"`
	UpdatedAt         json.RawMessage `json:"updated_at"`
	PersonProperties  json.RawMessage `json:"person_properties"`
	Tags              []string        `json:"tags"`
	AdditionalAnswers []struct {
		ID    json.RawMessage `json:"id"`
		Value struct {
			FreeResponse *string         `json:"free_response"`
			Scale        json.RawMessage `json:"scale"`
			SelectOne    *option         `json:"select_one"`
			SelectMany   []option        `json:"select_many"`
		} `json:"value"`
		Question struct {
			ID   json.RawMessage `json:"id"`
			Type string          `json:"type"`
			Text string          `json:"text"`
		} `json:"question"`
	} `json:"additional_answers"`
}

type option struct {
	ID   json.RawMessage `json:"id"`
	Text string          `json:"text"`
}

type delightedPerson struct {
	ID    json.RawMessage `json:"id"`
	Email string          `json:"email"`
	Name  string          `json:"name"`
	Phone string          `json:"phone_number"`
}

type delightedUnsubscribe struct {
	PersonID       json.RawMessage `json:"person_id"`
	Email          string          `json:"email"`
	Name           string          `json:"name"`
	UnsubscribedAt json.RawMessage `json:"unsubscribed_at"`
}

var delightedSurveyTypes = map[string]feedbackv1.SurveyType{
	"nps":       feedbackv1.SurveyType_SURVEY_TYPE_NPS,
	"enps":      feedbackv1.SurveyType_SURVEY_TYPE_ENPS,
	"csat":      feedbackv1.SurveyType_SURVEY_TYPE_CSAT,
	"ces":       feedbackv1.SurveyType_SURVEY_TYPE_CES,
	"star":      feedbackv1.SurveyType_SURVEY_TYPE_FIVE_STAR,
	"five_star": feedbackv1.SurveyType_SURVEY_TYPE_FIVE_STAR,
	"smileys":   feedbackv1.SurveyType_SURVEY_TYPE_SMILEYS,
	"pmf":       feedbackv1.SurveyType_SURVEY_TYPE_PMF,
	"thumbs":    feedbackv1.SurveyType_SURVEY_TYPE_THUMBS,
}

// delightedDoc decodes a response or unsubscribe webhook in one pass: the
// two event_data shapes share no field name, so one struct holds either.
type delightedDoc struct {
	EventType string `json:"event_type"`
	EventData *struct {
		delightedResponse
		delightedUnsubscribe
	} `json:"event_data"`
}

// Map implements Mapper.
func (Delighted) Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	// Fast path: the known event types, decoded once.
	var doc delightedDoc
	if decodeJSON(raw.Body, &doc) == nil {
		ev := &feedbackv1.FeedbackEvent{ProviderEventType: doc.EventType, Properties: map[string]*structpb.Value{}}
		c := &coercer{}
		var err error
		switch {
		case doc.EventData == nil && (isDelightedResponse(doc.EventType) || doc.EventType == "unsubscribe.created"):
			err = kafkaio.Permanentf(ReasonMissingID, "event_data is missing")
		case isDelightedResponse(doc.EventType):
			err = mapDelightedResponse(ev, doc.EventType, &doc.EventData.delightedResponse, c)
		case doc.EventType == "unsubscribe.created":
			err = mapDelightedUnsubscribe(ev, &doc.EventData.delightedUnsubscribe, c)
		default:
			return delightedGeneric(raw)
		}
		return finishDelighted(ev, c, err)
	}
	return delightedGeneric(raw)
}

func isDelightedResponse(eventType string) bool {
	return eventType == "survey_response.created" || eventType == "survey_response.updated"
}

// delightedGeneric maps what the fast path could not decode: an event type
// not foreseen, or a body whose fields have unexpected types (for a precise
// error).
func delightedGeneric(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	var env delightedEnvelope
	if err := decodeJSON(raw.Body, &env); err != nil {
		return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
	}
	ev := &feedbackv1.FeedbackEvent{ProviderEventType: env.EventType, Properties: map[string]*structpb.Value{}}
	c := &coercer{}
	var err error
	switch {
	case isNull(env.EventData) && (isDelightedResponse(env.EventType) || env.EventType == "unsubscribe.created"):
		err = kafkaio.Permanentf(ReasonMissingID, "event_data is missing")
	case isDelightedResponse(env.EventType):
		var r delightedResponse
		if err = decodeJSON(env.EventData, &r); err == nil {
			err = mapDelightedResponse(ev, env.EventType, &r, c)
		}
	case env.EventType == "unsubscribe.created":
		var u delightedUnsubscribe
		if err = decodeJSON(env.EventData, &u); err == nil {
			err = mapDelightedUnsubscribe(ev, &u, c)
		}
	default:
		// Not foreseen: keep it as an engagement event with its data.
		ev.Kind = feedbackv1.Kind_KIND_ENGAGEMENT
		ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_EVENT, Id: raw.EventId}
		ev.OccurredAt = raw.ReceivedAt
		ev.Version = raw.ReceivedAt
		if !isNull(env.EventData) {
			err = Flatten("event_data", env.EventData, ev.Properties)
		}
	}
	return finishDelighted(ev, c, err)
}

func finishDelighted(ev *feedbackv1.FeedbackEvent, c *coercer, err error) (*feedbackv1.FeedbackEvent, error) {
	if err != nil {
		if _, ok := kafkaio.IsPermanent(err); ok {
			return nil, err
		}
		return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
	}
	ev.Quality = &feedbackv1.Quality{CoercedFields: c.fields, Incomplete: ev.Quality.GetIncomplete()}
	return ev, nil
}

func mapDelightedResponse(ev *feedbackv1.FeedbackEvent, eventType string, r *delightedResponse, c *coercer) error {
	id := idString(r.ID)
	if id == "" {
		return kafkaio.Permanentf(ReasonMissingID, "event_data.id (the response id) is missing")
	}
	ev.Kind = feedbackv1.Kind_KIND_RESPONSE_CREATED
	if eventType == "survey_response.updated" {
		ev.Kind = feedbackv1.Kind_KIND_RESPONSE_UPDATED
	}
	ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: id}

	updated, err := c.time("updated_at", r.UpdatedAt)
	if err != nil {
		return err
	}
	created, err := c.time("created_at", r.CreatedAt)
	if err != nil {
		return err
	}
	if updated == nil {
		updated = created
	}
	if updated == nil {
		return kafkaio.Permanentf(ReasonMissingID, "event_data.updated_at and created_at are both missing: the response version is unknown")
	}
	ev.OccurredAt, ev.Version = updated, updated

	st, known := delightedSurveyTypes[strings.ToLower(r.SurveyType)]
	if !known {
		st = feedbackv1.SurveyType_SURVEY_TYPE_OTHER
		if r.SurveyType == "" {
			st = feedbackv1.SurveyType_SURVEY_TYPE_NPS // Delighted's default survey
		}
	}
	ev.Survey = &feedbackv1.Survey{Type: st, ProviderType: r.SurveyType}
	if v, ok, err := c.number("score", r.Score); err != nil {
		return err
	} else if ok {
		if ev.Score, err = scoreOnScale(st, v); err != nil {
			return err
		}
		ev.Segment = Segment(st, v)
	}
	ev.Comment = r.Comment
	ev.Permalink = r.Permalink
	ev.Tags = r.Tags
	// A created event usually arrives before the comment is written.
	ev.Quality = &feedbackv1.Quality{Incomplete: ev.Kind == feedbackv1.Kind_KIND_RESPONSE_CREATED && r.Comment == nil}

	if !isNull(r.Person) {
		var p delightedPerson
		if err := decodeJSON(r.Person, &p); err == nil {
			ev.Respondent = &feedbackv1.Respondent{Id: idString(p.ID), Email: p.Email, Name: p.Name, Phone: p.Phone}
		} else {
			// Without expand[]=person (REST backfill) person is just its id.
			ev.Respondent = &feedbackv1.Respondent{Id: idString(r.Person)}
		}
	}
	if !isNull(r.PersonProperties) {
		if err := Flatten("person_properties", r.PersonProperties, ev.Properties); err != nil {
			return kafkaio.Permanent(ReasonMalformedJSON, err)
		}
	}
	for _, a := range r.AdditionalAnswers {
		ans := &feedbackv1.Answer{QuestionId: idString(a.Question.ID), QuestionText: a.Question.Text, Type: a.Question.Type}
		switch {
		case a.Value.FreeResponse != nil:
			ans.Value = *a.Value.FreeResponse
		case !isNull(a.Value.Scale):
			ans.Value = strings.Trim(string(a.Value.Scale), `"`)
		case a.Value.SelectOne != nil:
			ans.Value = a.Value.SelectOne.Text
		case len(a.Value.SelectMany) > 0:
			for _, o := range a.Value.SelectMany {
				ans.Values = append(ans.Values, o.Text)
			}
			ans.Value = strings.Join(ans.Values, ", ")
		}
		ev.Answers = append(ev.Answers, ans)
	}
	return nil
}

func mapDelightedUnsubscribe(ev *feedbackv1.FeedbackEvent, u *delightedUnsubscribe, c *coercer) error {
	pid := idString(u.PersonID)
	if pid == "" && u.Email == "" {
		return kafkaio.Permanentf(ReasonMissingID, "event_data.person_id and email are both missing")
	}
	subject := pid
	if subject == "" {
		subject = "email:" + strings.ToLower(u.Email)
	}
	ev.Kind = feedbackv1.Kind_KIND_UNSUBSCRIBED
	ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_PERSON, Id: subject}
	ev.Respondent = &feedbackv1.Respondent{Id: pid, Email: u.Email, Name: u.Name}
	at, err := c.time("unsubscribed_at", u.UnsubscribedAt)
	if err != nil {
		return err
	}
	if at == nil {
		return kafkaio.Permanentf(ReasonMissingID, "event_data.unsubscribed_at is missing")
	}
	ev.OccurredAt, ev.Version = at, at
	return nil
}

// idString reads an id that may be a JSON string or number.
func idString(raw json.RawMessage) string {
	if isNull(raw) {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.TrimSpace(s)
	}
	var n json.Number
	if decodeJSON(raw, &n) == nil {
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			return strconv.FormatInt(i, 10)
		}
		return n.String()
	}
	return ""
}
