package mapping

import (
	"math"
	"strconv"
	"strings"

	"github.com/segmentio/encoding/json"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Typeform maps Typeform's form_response webhooks (and form_response_partial,
// its partial-response events) into survey responses:
//
//   - the subject is the response (form_response.token, the id the
//     Responses API names it by), so a partial response later completed, a
//     webhook and a backfilled copy all upsert one response;
//   - the first score question is the score: an "nps" field or an
//     opinion_scale of 11 steps from 0 is NPS (0–10, with segments); another
//     opinion_scale is its own range (start_at_one, steps); a "rating" of 5
//     steps is five-star, of other steps 1..steps; a choice whose label is a
//     satisfaction level (very dissatisfied … very satisfied) is CSAT 1–5;
//   - the first long_text (else short_text) answer is the comment;
//   - every answer is an Answer (question text from the definition);
//   - hidden fields, calculated.score, variables and metadata are kept as
//     properties; hidden email/name/user id name the respondent.
//
// Where the definition is absent (a webhook without it, a backfilled item),
// an opinion_scale is taken to be Typeform's default 0–10 scale
// (assumption, stated in docs/providers.md).
type Typeform struct{}

type tfField struct {
	ID         string `json:"id"`
	Ref        string `json:"ref"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Properties struct {
		Steps      *int  `json:"steps"`
		StartAtOne *bool `json:"start_at_one"`
	} `json:"properties"`
}

type tfAnswer struct {
	Type  string  `json:"type"`
	Field tfField `json:"field"`

	Text        *string          `json:"text"`
	Email       *string          `json:"email"`
	URL         *string          `json:"url"`
	FileURL     *string          `json:"file_url"`
	Date        *string          `json:"date"`
	PhoneNumber *string          `json:"phone_number"`
	Number      *json.RawMessage `json:"number"`
	Boolean     *bool            `json:"boolean"`
	Choice      *struct {
		Label string `json:"label"`
		Other string `json:"other"`
	} `json:"choice"`
	Choices *struct {
		Labels []string `json:"labels"`
		Other  string   `json:"other"`
	} `json:"choices"`
}

type tfVariable struct {
	Key    string          `json:"key"`
	Type   string          `json:"type"`
	Number json.RawMessage `json:"number"`
	Text   *string         `json:"text"`
}

// csatLevels are the satisfaction labels a CSAT choice is read from.
var csatLevels = map[string]float64{
	"very dissatisfied": 1, "very unsatisfied": 1, "dissatisfied": 2, "unsatisfied": 2,
	"neutral": 3, "neither satisfied nor dissatisfied": 3, "satisfied": 4, "very satisfied": 5,
}

// Map implements Mapper.
func (Typeform) Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error) {
	o, err := envelope(raw)
	if err != nil {
		return nil, err
	}
	ev := newEvent(raw)
	if ev.ProviderEventType == "" {
		ev.ProviderEventType = o.str("event_type")
	}
	fr := o.sub("form_response")
	if fr == nil {
		return nil, kafkaio.Permanentf(ReasonMissingID, "form_response is missing")
	}
	token := fr.str("token")
	if token == "" {
		token = fr.str("response_id")
	}
	if token == "" {
		return nil, kafkaio.Permanentf(ReasonMissingID, "form_response.token is missing")
	}
	ev.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: token}
	partial := ev.ProviderEventType == "form_response_partial"
	c := &coercer{}
	// A completed response is versioned by its submission, a partial one by
	// its landing: the completed version is always the newer.
	timeField := "submitted_at"
	if partial || isNull(fr["submitted_at"]) || strings.HasPrefix(fr.str("submitted_at"), "0001-") {
		timeField = "landed_at"
	}
	t, err := c.isoTime("form_response."+timeField, fr[timeField])
	if err != nil {
		return nil, err
	}
	when(ev, t, raw)
	ev.Kind = feedbackv1.Kind_KIND_RESPONSE_COMPLETED
	ev.Quality = &feedbackv1.Quality{}
	if partial {
		ev.Kind, ev.Quality.Incomplete = feedbackv1.Kind_KIND_RESPONSE_UPDATED, true
	}

	def := fr.sub("definition")
	var fields []tfField
	_ = decodeJSON(def["fields"], &fields)
	byID := make(map[string]tfField, len(fields))
	for _, f := range fields {
		byID[f.ID] = f
	}
	ev.Survey = &feedbackv1.Survey{Id: fr.str("form_id"), Name: def.str("title"), Type: feedbackv1.SurveyType_SURVEY_TYPE_OTHER}

	var answers []tfAnswer
	if !isNull(fr["answers"]) {
		if err := decodeJSON(fr["answers"], &answers); err != nil {
			return nil, kafkaio.Permanentf(ReasonInvalidField, "form_response.answers: %v", err)
		}
	}
	var longText, shortText *string
	resp := &feedbackv1.Respondent{}
	for i, a := range answers {
		f := a.Field
		if d, ok := byID[f.ID]; ok {
			f.Title, f.Properties = d.Title, d.Properties
			if f.Ref == "" {
				f.Ref = d.Ref
			}
		}
		ans := &feedbackv1.Answer{QuestionId: firstNonEmpty(f.ID, f.Ref), QuestionText: f.Title, Type: f.Type}
		at := "form_response.answers." + strconv.Itoa(i)
		switch {
		case a.Text != nil:
			ans.Value = *a.Text
			if f.Type == "long_text" && longText == nil {
				longText = a.Text
			} else if shortText == nil && f.Type != "long_text" {
				shortText = a.Text
			}
		case a.Email != nil:
			ans.Value = *a.Email
			if resp.Email == "" {
				resp.Email = *a.Email
			}
		case a.PhoneNumber != nil:
			ans.Value = *a.PhoneNumber
			if resp.Phone == "" {
				resp.Phone = *a.PhoneNumber
			}
		case a.URL != nil:
			ans.Value = *a.URL
		case a.FileURL != nil:
			ans.Value = *a.FileURL
		case a.Date != nil:
			ans.Value = *a.Date
		case a.Boolean != nil:
			ans.Value = strconv.FormatBool(*a.Boolean)
		case a.Choice != nil:
			ans.Value = firstNonEmpty(a.Choice.Label, a.Choice.Other)
			if lvl, ok := csatLevels[strings.ToLower(strings.TrimSpace(ans.Value))]; ok && ev.Score == nil {
				ev.Score = &feedbackv1.Score{Value: lvl, Min: 1, Max: 5}
				ev.Survey.Type, ev.Survey.ProviderType = feedbackv1.SurveyType_SURVEY_TYPE_CSAT, f.Type
			}
		case a.Choices != nil:
			ans.Values = append(append([]string(nil), a.Choices.Labels...), nonEmpty(a.Choices.Other)...)
			ans.Value = strings.Join(ans.Values, ", ")
		case a.Number != nil:
			v, ok, err := c.number(at+".number", *a.Number)
			if err != nil {
				return nil, err
			}
			if !ok {
				break
			}
			ans.Value = strconv.FormatFloat(v, 'f', -1, 64)
			if ev.Score == nil {
				if err := typeformScore(ev, f, v); err != nil {
					return nil, err
				}
			}
		}
		ev.Answers = append(ev.Answers, ans)
	}
	switch {
	case longText != nil:
		ev.Comment = longText
	case shortText != nil:
		ev.Comment = shortText
	}
	if ev.Score != nil && (ev.Survey.Type == feedbackv1.SurveyType_SURVEY_TYPE_NPS) {
		ev.Segment = Segment(ev.Survey.Type, ev.Score.Value)
	}

	hidden := fr.sub("hidden")
	resp.Email = firstNonEmpty(resp.Email, hidden.str("email"))
	resp.Name = firstNonEmpty(hidden.str("name"), joinName(hidden.str("first_name"), hidden.str("last_name")))
	resp.Id = firstNonEmpty(hidden.str("user_id"), hidden.str("customer_id"), hidden.str("id"))
	resp.Locale = firstNonEmpty(hidden.str("locale"), hidden.str("language"))
	if resp.Id != "" || resp.Email != "" || resp.Name != "" || resp.Phone != "" {
		ev.Respondent = resp
	}
	for _, k := range []string{"hidden", "calculated", "metadata"} {
		if !isNull(fr[k]) {
			if err := Flatten(k, fr[k], ev.Properties); err != nil {
				return nil, kafkaio.Permanent(ReasonMalformedJSON, err)
			}
		}
	}
	var vars []tfVariable
	_ = decodeJSON(fr["variables"], &vars)
	for _, v := range vars {
		if v.Key == "" {
			continue
		}
		if v.Text != nil {
			ev.Properties["variables."+v.Key] = structpb.NewStringValue(*v.Text)
		} else if len(v.Number) > 0 {
			if n, err := strconv.ParseFloat(string(v.Number), 64); err == nil {
				ev.Properties["variables."+v.Key] = structpb.NewNumberValue(n)
			}
		}
	}
	for _, k := range []string{"form_id", "landed_at", "submitted_at"} {
		if s := fr.str(k); s != "" {
			ev.Properties[k] = structpb.NewStringValue(s)
		}
	}
	ev.Quality.CoercedFields = c.fields
	return ev, nil
}

// typeformScore reads a numeric answer as the response's score by its field.
func typeformScore(ev *feedbackv1.FeedbackEvent, f tfField, v float64) error {
	steps, startAtOne := -1, false
	if f.Properties.Steps != nil {
		steps = *f.Properties.Steps
	}
	if f.Properties.StartAtOne != nil {
		startAtOne = *f.Properties.StartAtOne
	}
	var st feedbackv1.SurveyType
	var lo, hi float64
	switch f.Type {
	case "nps":
		st, lo, hi = feedbackv1.SurveyType_SURVEY_TYPE_NPS, 0, 10
	case "opinion_scale":
		if steps < 0 {
			steps = 11 // Typeform's default opinion scale: 0–10
		}
		lo = 0
		if startAtOne {
			lo = 1
		}
		hi = lo + float64(steps) - 1
		st = feedbackv1.SurveyType_SURVEY_TYPE_OTHER
		if lo == 0 && hi == 10 {
			st = feedbackv1.SurveyType_SURVEY_TYPE_NPS
		}
	case "rating":
		if steps < 0 {
			steps = 5 // Typeform's default rating
		}
		lo, hi = 1, float64(steps)
		st = feedbackv1.SurveyType_SURVEY_TYPE_OTHER
		if steps == 5 {
			st = feedbackv1.SurveyType_SURVEY_TYPE_FIVE_STAR
		}
	default:
		return nil // a number answer that is not a score question
	}
	if v < lo || v > hi || math.IsNaN(v) {
		return kafkaio.Permanentf(ReasonScoreOutOfScale, "%s answer %v is outside its scale %v..%v", f.Type, v, lo, hi)
	}
	ev.Score = &feedbackv1.Score{Value: v, Min: lo, Max: hi}
	ev.Survey.Type, ev.Survey.ProviderType = st, f.Type
	return nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
