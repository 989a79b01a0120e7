package helpdesk

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// TicketData is what the subject and comment templates see:
//
//	.EventID .Source .Provider .Kind .Received
//	.Score ("3/10", "-") .ScoreValue .Segment ("detractor") .SegmentWord ("Detractor")
//	.Survey (name or id) .Comment .Respondent (name or email) .Email .RespondentID
//	.Account (the enricher's lookup fields, by name: account_name, tier, ...)
//	.Labels ("escalate, nurture") .Lane .Link (the provider's permalink)
//	.Event (the FeedbackEvent itself, for anything else)
func TicketData(f *feedbackv1.FeedbackEvent) map[string]any {
	seg := strings.ToLower(strings.TrimPrefix(f.Segment.String(), "SEGMENT_"))
	if seg == "unspecified" {
		seg = ""
	}
	word := "Feedback"
	if seg != "" {
		word = strings.ToUpper(seg[:1]) + seg[1:]
	}
	score := "-"
	if s := f.GetScore(); s != nil {
		score = strconv.FormatFloat(s.Value, 'f', -1, 64)
		if s.Max > 0 {
			score += "/" + strconv.FormatFloat(s.Max, 'f', -1, 64)
		}
	}
	account := map[string]string{}
	for _, l := range f.GetEnrichment().GetLookups() {
		for k, v := range l.GetFields() {
			account[k] = fmt.Sprint(v.AsInterface())
		}
	}
	labels := append([]string(nil), f.GetEnrichment().GetLabels()...)
	sort.Strings(labels)
	received := ""
	if f.ReceivedAt != nil {
		received = f.ReceivedAt.AsTime().UTC().Format(time.RFC3339)
	}
	return map[string]any{
		"EventID": f.EventId, "Source": f.Source, "Provider": f.Provider,
		"Kind":     strings.ToLower(strings.TrimPrefix(f.Kind.String(), "KIND_")),
		"Received": received,
		"Score":    score, "ScoreValue": f.GetScore().GetValue(), "Segment": seg, "SegmentWord": word,
		"Survey":     firstNonEmpty(f.GetSurvey().GetName(), f.GetSurvey().GetId()),
		"Comment":    f.GetComment(),
		"Respondent": firstNonEmpty(f.GetRespondent().GetName(), f.GetRespondent().GetEmail()), "Email": f.GetRespondent().GetEmail(),
		"RespondentID": f.GetRespondent().GetId(),
		"Account":      account, "Labels": strings.Join(labels, ", "),
		"Lane": strings.ToLower(strings.TrimPrefix(f.GetEnrichment().GetLane().String(), "LANE_")),
		"Link": f.Permalink, "Event": f,
	}
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
