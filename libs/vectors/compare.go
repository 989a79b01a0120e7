package vectors

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Compare lists every way ev differs from a vector's canonical expectation
// (expect.canonical); an empty result means the meaning holds. A canonical
// field this comparator does not know is reported, never ignored.
func Compare(ev *feedbackv1.FeedbackEvent, want map[string]any) []string {
	var out []string
	bad := func(field string, got, want any) {
		out = append(out, fmt.Sprintf("%s = %v, want %v", field, got, want))
	}
	ts := func(t *timestamppb.Timestamp) string {
		if t == nil {
			return ""
		}
		return t.AsTime().UTC().Format(time.RFC3339)
	}
	for k, w := range want {
		switch k {
		case "kind":
			if got := strings.ToLower(strings.TrimPrefix(ev.Kind.String(), "KIND_")); got != w {
				bad(k, got, w)
			}
		case "event_id_from":
			if ev.EventId != w {
				bad("event_id", ev.EventId, w)
			}
		case "subject":
			if ev.GetSubject().GetId() != w {
				bad(k, ev.GetSubject().GetId(), w)
			}
		case "subject_type":
			if got := strings.ToLower(strings.TrimPrefix(ev.GetSubject().GetType().String(), "SUBJECT_TYPE_")); got != w {
				bad(k, got, w)
			}
		case "follow_up":
			out = append(out, compareFollowUp(ev.GetFollowUp(), w.(map[string]any), ts)...)
		case "version":
			if ts(ev.Version) != w {
				bad(k, ts(ev.Version), w)
			}
		case "occurred_at":
			if ts(ev.OccurredAt) != w {
				bad(k, ts(ev.OccurredAt), w)
			}
		case "survey_type":
			if got := strings.ToLower(strings.TrimPrefix(ev.GetSurvey().GetType().String(), "SURVEY_TYPE_")); got != w {
				bad(k, got, w)
			}
		case "score":
			if w == nil && ev.Score != nil || w != nil && (ev.Score == nil || ev.Score.Value != w.(float64)) {
				bad(k, ev.GetScore(), w)
			}
		case "survey_id":
			if ev.GetSurvey().GetId() != w {
				bad(k, ev.GetSurvey().GetId(), w)
			}
		case "survey_name":
			if ev.GetSurvey().GetName() != w {
				bad(k, ev.GetSurvey().GetName(), w)
			}
		case "respondent_phone":
			if ev.GetRespondent().GetPhone() != w {
				bad(k, ev.GetRespondent().GetPhone(), w)
			}
		case "locale":
			if ev.GetRespondent().GetLocale() != w {
				bad(k, ev.GetRespondent().GetLocale(), w)
			}
		case "scale":
			s := w.([]any)
			if ev.Score == nil || ev.Score.Min != s[0].(float64) || ev.Score.Max != s[1].(float64) {
				bad(k, ev.GetScore(), w)
			}
		case "segment":
			got := strings.ToLower(strings.TrimPrefix(ev.Segment.String(), "SEGMENT_"))
			if w == nil && ev.Segment != feedbackv1.Segment_SEGMENT_UNSPECIFIED || w != nil && got != w {
				bad(k, got, w)
			}
		case "respondent_email":
			if ev.GetRespondent().GetEmail() != orEmpty(w) {
				bad(k, ev.GetRespondent().GetEmail(), w)
			}
		case "respondent_name":
			if ev.GetRespondent().GetName() != w {
				bad(k, ev.GetRespondent().GetName(), w)
			}
		case "respondent_id":
			if ev.GetRespondent().GetId() != w {
				bad(k, ev.GetRespondent().GetId(), w)
			}
		case "comment":
			if w == nil && ev.Comment != nil || w != nil && ev.GetComment() != w {
				bad(k, ev.Comment, w)
			}
		case "properties":
			for pk, pv := range w.(map[string]any) {
				got, ok := ev.Properties[pk]
				if !ok || asText(got) != fmt.Sprint(pv) {
					bad("properties["+pk+"]", asText(got), pv)
				}
			}
		case "answers":
			wa := w.([]any)
			if len(ev.Answers) != len(wa) {
				bad("len(answers)", len(ev.Answers), len(wa))
				continue
			}
			for i, a := range wa {
				am := a.(map[string]any)
				g := ev.Answers[i]
				if g.QuestionId != am["question_id"] || g.Type != am["type"] || g.Value != fmt.Sprint(am["value"]) {
					bad("answers["+strconv.Itoa(i)+"]", g, am)
				}
			}
		default:
			b, _ := json.Marshal(w)
			out = append(out, fmt.Sprintf("canonical field %q (%s) is not checked by this comparator", k, b))
		}
	}
	return out
}

// compareFollowUp compares a follow-up with its expectation, field by field.
func compareFollowUp(fu *feedbackv1.FollowUp, want map[string]any, ts func(*timestamppb.Timestamp) string) []string {
	if fu == nil {
		return []string{fmt.Sprintf("follow_up is missing, want %v", want)}
	}
	got := map[string]string{
		"system": fu.System, "ticket_id": fu.TicketId, "response_key": fu.ResponseKey, "status": fu.Status,
		"stage":             strings.ToLower(strings.TrimPrefix(fu.Stage.String(), "FOLLOW_UP_STAGE_")),
		"ticket_created_at": ts(fu.TicketCreatedAt),
	}
	var out []string
	for k, w := range want {
		g, known := got[k]
		switch {
		case !known:
			out = append(out, fmt.Sprintf("canonical field follow_up.%s is not checked by this comparator", k))
		case g != fmt.Sprint(w):
			out = append(out, fmt.Sprintf("follow_up.%s = %q, want %q", k, g, w))
		}
	}
	return out
}

// orEmpty treats an expected null as the empty string of an unset proto field.
func orEmpty(w any) any {
	if w == nil {
		return ""
	}
	return w
}

func asText(v *structpb.Value) string {
	if v == nil {
		return "<missing>"
	}
	switch x := v.Kind.(type) {
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(x.NumberValue, 'f', -1, 64)
	case *structpb.Value_StringValue:
		return x.StringValue
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *structpb.Value_NullValue:
		return "<nil>"
	}
	return v.String()
}
