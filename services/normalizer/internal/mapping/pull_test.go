package mapping

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/idempotency"
	"github.com/closedloop/closedloop/libs/pull"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// A Typeform response fetched from the Responses API maps like its webhook:
// the same subject and version, so dedupe finds the copy; a partial
// response is an incomplete version, and its completion a newer version of
// the same subject that upserts it; the item's dedupe keys (what
// reconciliation asks the store) are the mapped event's.
func TestATypeformItemFromTheAPIMapsLikeItsWebhook(t *testing.T) {
	landed, submitted := "2026-11-20T10:00:00Z", "2026-11-20T10:02:30Z"
	answers := `[{"type":"number","number":3,"field":{"id":"f1","type":"opinion_scale","ref":"nps"}},{"type":"text","text":"Too slow","field":{"id":"f2","type":"long_text"}}]`
	webhook := `{"event_id":"01HWEBHOOK","event_type":"form_response","form_response":{"form_id":"frm1","token":"tok9","landed_at":"` + landed +
		`","submitted_at":"` + submitted + `","answers":` + answers + `}}`
	api := `{"landing_id":"tok9","token":"tok9","response_id":"tok9","landed_at":"` + landed + `","submitted_at":"` + submitted +
		`","metadata":{"platform":"other"},"hidden":{},"calculated":{"score":0},"variables":[],"answers":` + answers + `}`
	partial := `{"landing_id":"tok9","token":"tok9","response_id":"tok9","landed_at":"` + landed + `","submitted_at":"0001-01-01T00:00:00Z","answers":[]}`

	now := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	mapRaw := func(eventID, eventType string, body []byte) *feedbackv1.FeedbackEvent {
		t.Helper()
		ev, err := Map(&feedbackv1.RawWebhook{EventId: eventID, Source: "tf", Provider: "typeform", EventType: eventType, Body: body, ReceivedAt: timestamppb.New(now)}, now)
		if err != nil {
			t.Fatalf("%s: %v", eventType, err)
		}
		return ev
	}
	fromWebhook := mapRaw("01HWEBHOOK", "form_response", []byte(webhook))
	item, err := pull.TypeformItem("frm1", []byte(api))
	if err != nil {
		t.Fatal(err)
	}
	fromAPI := mapRaw(item.EventID, item.EventType, item.Body)
	if fromAPI.GetSubject().GetId() != "tok9" || fromAPI.GetSubject().GetId() != fromWebhook.GetSubject().GetId() ||
		!fromAPI.Version.AsTime().Equal(fromWebhook.Version.AsTime()) || fromAPI.GetScore().GetValue() != fromWebhook.GetScore().GetValue() {
		t.Fatalf("API copy %v / %v differs from the webhook's %v / %v", fromAPI.GetSubject(), fromAPI.Version.AsTime(), fromWebhook.GetSubject(), fromWebhook.Version.AsTime())
	}
	if k1, k2 := idempotency.EventKeys(fromAPI), idempotency.EventKeys(fromWebhook); k1[1] != k2[1] {
		t.Fatalf("subject-version keys differ: %v vs %v", k1, k2)
	}
	if got := item.DedupeKeys(); got[0] != idempotency.EventKeys(fromAPI)[0] || got[1] != idempotency.EventKeys(fromAPI)[1] {
		t.Fatalf("the item's keys %v are not the mapped event's %v", got, idempotency.EventKeys(fromAPI))
	}

	p, err := pull.TypeformItem("frm1", []byte(partial))
	if err != nil {
		t.Fatal(err)
	}
	fromPartial := mapRaw(p.EventID, p.EventType, p.Body)
	if p.EventType != "form_response_partial" || !fromPartial.GetQuality().GetIncomplete() || fromPartial.GetSubject().GetId() != "tok9" ||
		!fromPartial.Version.AsTime().Before(fromAPI.Version.AsTime()) {
		t.Fatalf("partial: %s, incomplete %v, version %s (completed %s)", p.EventType, fromPartial.GetQuality().GetIncomplete(), fromPartial.Version.AsTime(), fromAPI.Version.AsTime())
	}
}
