package slack

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// escape makes text safe in mrkdwn (Slack's three control characters).
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// cut shortens s to n runes.
func cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func segmentWord(s feedbackv1.Segment) string {
	switch s {
	case feedbackv1.Segment_SEGMENT_DETRACTOR:
		return "Detractor"
	case feedbackv1.Segment_SEGMENT_PASSIVE:
		return "Passive"
	case feedbackv1.Segment_SEGMENT_PROMOTER:
		return "Promoter"
	}
	return "Feedback"
}

func score(ev *feedbackv1.FeedbackEvent) string {
	if ev.Score == nil {
		return "no score"
	}
	return strconv.FormatFloat(ev.Score.Value, 'f', -1, 64) + "/" + strconv.FormatFloat(ev.Score.Max, 'f', -1, 64)
}

func who(ev *feedbackv1.FeedbackEvent) string {
	r := ev.GetRespondent()
	switch {
	case r.GetName() != "" && r.GetEmail() != "":
		return escape(r.Name) + " <mailto:" + escape(r.Email) + "|" + escape(r.Email) + ">"
	case r.GetEmail() != "":
		return escape(r.Email)
	case r.GetName() != "":
		return escape(r.Name)
	}
	return "unknown respondent"
}

// account is the enricher's context: "Example GmbH · enterprise · ARR 120000".
func account(ev *feedbackv1.FeedbackEvent) string {
	var parts []string
	names := make([]string, 0, len(ev.GetEnrichment().GetLookups()))
	for n := range ev.GetEnrichment().GetLookups() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fields := ev.Enrichment.Lookups[n].GetFields()
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if v := value(fields[k]); v != "" {
				parts = append(parts, escape(k)+": "+escape(cut(v, 60)))
			}
		}
	}
	return strings.Join(parts, " · ")
}

func value(v *structpb.Value) string {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return x.StringValue
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(x.NumberValue, 'f', -1, 64)
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	}
	return ""
}

// alert is the message of one event.
func alert(ev *feedbackv1.FeedbackEvent, link string) message {
	title := fmt.Sprintf("%s: %s", segmentWord(ev.Segment), score(ev))
	if labels := ev.GetEnrichment().GetLabels(); len(labels) > 0 {
		title += "  [" + strings.Join(labels, ", ") + "]"
	}
	blocks := []block{
		{"type": "header", "text": map[string]any{"type": "plain_text", "text": cut(title, 150)}},
	}
	if c := ev.GetComment(); c != "" {
		blocks = append(blocks, block{"type": "section", "text": text(">" + strings.ReplaceAll(escape(cut(c, 2500)), "\n", "\n>"))})
	}
	fields := []any{text("*Respondent*\n" + who(ev))}
	if s := ev.GetSurvey(); s.GetName() != "" || s.GetId() != "" {
		fields = append(fields, text("*Survey*\n"+escape(cut(firstNonEmpty(s.GetName(), s.GetId()), 100))))
	}
	if a := account(ev); a != "" {
		fields = append(fields, text("*Account*\n"+a))
	}
	fields = append(fields, text("*Source*\n"+escape(ev.Source)))
	blocks = append(blocks, block{"type": "section", "fields": fields})
	ctx := []any{text(fmt.Sprintf("%s · %s · event %s", escape(ev.ProviderEventType), at(ev).UTC().Format("2006-01-02 15:04 MST"), escape(ev.EventId)))}
	if link != "" {
		ctx = append(ctx, text("<"+link+"|View the response>"))
	}
	blocks = append(blocks, block{"type": "context", "elements": ctx})
	fallback := fmt.Sprintf("%s from %s", title, plain(ev))
	if c := ev.GetComment(); c != "" {
		fallback += ": " + cut(c, 200)
	}
	return message{Text: fallback, Blocks: blocks}
}

func plain(ev *feedbackv1.FeedbackEvent) string {
	r := ev.GetRespondent()
	return firstNonEmpty(r.GetName(), firstNonEmpty(r.GetEmail(), "unknown respondent"))
}

func at(ev *feedbackv1.FeedbackEvent) time.Time {
	if ev.OccurredAt != nil {
		return ev.OccurredAt.AsTime()
	}
	return ev.GetReceivedAt().AsTime()
}

// digestLines is how many events a digest lists one by one.
const digestLines = 10

// digest is one message for a backlog of events.
func digest(events []*sink.Event, link func(*feedbackv1.FeedbackEvent) string) message {
	first, last := at(events[0].Feedback), at(events[0].Feedback)
	segs := map[string]int{}
	for _, e := range events {
		t := at(e.Feedback)
		if t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
		segs[strings.ToLower(segmentWord(e.Feedback.Segment))+"s"]++
	}
	var counts []string
	for _, k := range []string{"detractors", "passives", "promoters", "feedbacks"} {
		if n := segs[k]; n > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", n, k))
		}
	}
	span := last.Sub(first).Round(time.Minute)
	title := fmt.Sprintf("%s in the last %s", strings.Join(counts, ", "), humanize(span))
	var lines []string
	for _, e := range events[:min(len(events), digestLines)] {
		ev := e.Feedback
		l := fmt.Sprintf("• *%s* %s", score(ev), who(ev))
		if c := ev.GetComment(); c != "" {
			l += " — _" + escape(cut(c, 120)) + "_"
		}
		if u := link(ev); u != "" {
			l += " <" + u + "|open>"
		}
		lines = append(lines, l)
	}
	if more := len(events) - digestLines; more > 0 {
		lines = append(lines, fmt.Sprintf("… and %d more", more))
	}
	blocks := []block{
		{"type": "header", "text": map[string]any{"type": "plain_text", "text": cut(title, 150)}},
		{"type": "section", "text": text(strings.Join(lines, "\n"))},
		{"type": "context", "elements": []any{text(fmt.Sprintf("A backlog collapsed into one message (%s to %s UTC)",
			first.UTC().Format("15:04"), last.UTC().Format("15:04")))}},
	}
	return message{Text: title, Blocks: blocks}
}

func humanize(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "minute"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + " minutes"
	default:
		return strconv.FormatFloat(d.Hours(), 'f', 1, 64) + " hours"
	}
}
