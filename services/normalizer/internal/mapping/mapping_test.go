package mapping

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/segmentio/asm/cpu"
	"github.com/segmentio/asm/cpu/x86"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/feedback"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/providers"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

func mapBody(t *testing.T, body string) (*feedbackv1.FeedbackEvent, error) {
	t.Helper()
	return Map(&feedbackv1.RawWebhook{EventId: "e1", Source: "s", Provider: "delighted", Body: []byte(body)}, time.Unix(0, 0))
}

func TestSegmentsFollowTheNPSBands(t *testing.T) {
	nps := feedbackv1.SurveyType_SURVEY_TYPE_NPS
	cases := []struct {
		score float64
		want  feedbackv1.Segment
	}{{0, feedbackv1.Segment_SEGMENT_DETRACTOR}, {6, feedbackv1.Segment_SEGMENT_DETRACTOR}, {7, feedbackv1.Segment_SEGMENT_PASSIVE},
		{8, feedbackv1.Segment_SEGMENT_PASSIVE}, {9, feedbackv1.Segment_SEGMENT_PROMOTER}, {10, feedbackv1.Segment_SEGMENT_PROMOTER}}
	for _, c := range cases {
		if got := Segment(nps, c.score); got != c.want {
			t.Errorf("score %v: %v, want %v", c.score, got, c.want)
		}
	}
	if got := Segment(feedbackv1.SurveyType_SURVEY_TYPE_CSAT, 1); got != feedbackv1.Segment_SEGMENT_UNSPECIFIED {
		t.Errorf("CSAT has a segment: %v", got)
	}
}

func TestNumericStringsAndISOTimesAreCoercedAndFlagged(t *testing.T) {
	ev, err := mapBody(t, `{"event_type":"survey_response.updated","event_id":"e1","event_data":{"id":77,"survey_type":"nps","score":"3","updated_at":"2025-11-22T02:53:20Z","comment":"slow"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Score.GetValue() != 3 || ev.Segment != feedbackv1.Segment_SEGMENT_DETRACTOR || ev.Subject.Id != "77" {
		t.Fatalf("event = %v", ev)
	}
	if ev.Version.AsTime() != time.Date(2025, 11, 22, 2, 53, 20, 0, time.UTC) {
		t.Fatalf("version = %v", ev.Version.AsTime())
	}
	if got := ev.Quality.CoercedFields; len(got) != 2 || got[0] != "score" || got[1] != "updated_at" {
		t.Fatalf("coerced fields = %v", got)
	}
}

func TestUnusablePayloadsAreQuarantinedWithTheirReason(t *testing.T) {
	cases := []struct{ name, body, reason string }{
		{"truncated JSON", `{"event_type":"survey_response.created","event_id":"e1","event_data":{"id":"1"`, ReasonMalformedJSON},
		{"a response without id", `{"event_type":"survey_response.created","event_data":{"score":3,"updated_at":1}}`, ReasonMissingID},
		{"a score above the scale", `{"event_type":"survey_response.created","event_data":{"id":"1","survey_type":"nps","score":11,"updated_at":1}}`, ReasonScoreOutOfScale},
		{"a negative score", `{"event_type":"survey_response.created","event_data":{"id":"1","survey_type":"nps","score":-1,"updated_at":1}}`, ReasonScoreOutOfScale},
		{"a score that is not a number", `{"event_type":"survey_response.created","event_data":{"id":"1","score":"ten","updated_at":1}}`, ReasonInvalidField},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := mapBody(t, c.body)
			if reason, ok := kafkaio.IsPermanent(err); !ok || reason != c.reason {
				t.Fatalf("err = %v, want quarantine reason %s", err, c.reason)
			}
		})
	}
}

func TestAnUnknownEventTypeIsKeptAsAnEngagementEventWithItsData(t *testing.T) {
	ev, err := mapBody(t, `{"event_type":"survey_request.sent","event_id":"e1","event_data":{"person":{"email":"a@b.c"},"n":null}}`)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != feedbackv1.Kind_KIND_ENGAGEMENT || ev.ProviderEventType != "survey_request.sent" {
		t.Fatalf("event = %v", ev)
	}
	if ev.Properties["event_data.person.email"].GetStringValue() != "a@b.c" {
		t.Fatalf("properties = %v", ev.Properties)
	}
	if _, isNull := ev.Properties["event_data.n"].GetKind().(*structpb.Value_NullValue); !isNull {
		t.Fatalf("null did not stay null: %v", ev.Properties["event_data.n"])
	}
}

func TestUnknownSurveyTypesAreOtherAndKeepTheirString(t *testing.T) {
	ev, err := mapBody(t, `{"event_type":"survey_response.created","event_id":"e1","event_data":{"id":"1","survey_type":"emoji_v2","score":42,"updated_at":1}}`)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Survey.Type != feedbackv1.SurveyType_SURVEY_TYPE_OTHER || ev.Survey.ProviderType != "emoji_v2" || ev.Score.Value != 42 || ev.Segment != feedbackv1.Segment_SEGMENT_UNSPECIFIED {
		t.Fatalf("event = %v", ev)
	}
}

func FuzzDelightedMapNeverPanics(f *testing.F) {
	f.Add([]byte(`{"event_type":"survey_response.created","event_id":"x","event_data":{"id":"1","score":9,"updated_at":1}}`))
	f.Add([]byte(`{"event_type":"unsubscribe.created","event_data":{"person_id":1}}`))
	// Strings that are not UTF-8, in a field, a comment, a property's key and value.
	f.Add([]byte("{\"event_type\":\"survey_response.created\",\"event_id\":\"x\xff\",\"event_data\":{\"id\":\"1\xc3\",\"score\":9,\"comment\":\"bad \xff\xfe\",\"updated_at\":1,\"person\":{\"id\":\"p\xff\",\"email\":\"a\xfe@b\"},\"person_properties\":{\"k\xff\":\"v\xfe\",\"n\":{\"d\xc3\":[\"\xff\"]}}}}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := Map(&feedbackv1.RawWebhook{EventId: "e", Provider: "delighted", Body: body}, time.Unix(0, 0))
		if err == nil && ev.Subject == nil {
			t.Fatalf("mapped without a subject: %s", body)
		}
		if err == nil {
			validProto3(t, ev, body)
		}
		if err != nil {
			if _, ok := kafkaio.IsPermanent(err); !ok {
				t.Fatalf("a mapping error that is not a quarantine reason: %v", err)
			}
		}
		_ = json.Valid(body)
	})
}

// validProto3 fails t unless ev is a valid proto3 message, which is what
// proto.Marshal checks: every string UTF-8. The normalizer encodes events
// with the generated MarshalVT, which does not check it, so a mapped event's
// strings must be valid already (the raw record's are: the normalizer
// decodes it with proto.Unmarshal, which refuses them otherwise).
func validProto3(t *testing.T, ev *feedbackv1.FeedbackEvent, body []byte) {
	t.Helper()
	if _, err := proto.Marshal(ev); err != nil {
		t.Fatalf("mapped to an event that is not valid protobuf (%v): %q", err, body)
	}
}

func BenchmarkDelightedMap(b *testing.B) {
	body := []byte(`{"event_type":"survey_response.updated","event_id":"5d6b5d812f92914589e2b2bae3d6a22b23805c732669bffa8bfb5f9a5dd13030","event_data":{"id":"5435","person":{"id":"5975","email":"anna.mueller@example.de","name":"Anna Müller","created_at":1763693600},"survey_type":"nps","score":9,"comment":"Schnell und zuverlässig — danke!","permalink":"https://app.delighted.com/r/5435abc","created_at":1763780000,"updated_at":1763780095,"person_properties":{"plan":"enterprise","account":{"id":"acct_42","region":"eu-central"},"seats":120},"notes":[],"tags":[],"additional_answers":[{"id":"4","value":{"free_response":null,"scale":null,"select_one":{"id":"opt_1","text":"Price"},"select_many":null},"question":{"id":"enum_z9EvYV","type":"select_one","text":"What matters most?"}}]}}`)
	raw := &feedbackv1.RawWebhook{EventId: "e", Source: "s", Provider: "delighted", Body: body}
	now := time.Now()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := Map(raw, now); err != nil {
			b.Fatal(err)
		}
	}
}

func mapAs(t *testing.T, provider, eventType, body string) (*feedbackv1.FeedbackEvent, error) {
	t.Helper()
	return Map(&feedbackv1.RawWebhook{EventId: "e1", Source: "s", Provider: provider, EventType: eventType, Body: []byte(body)}, time.Unix(0, 0))
}

func TestProviderEventsThatAreNotFeedbackAreKeptAsEngagement(t *testing.T) {
	cases := []struct {
		name, provider, typ, body string
		subjectType               feedbackv1.SubjectType
		subject                   string
	}{
		{"a DelightLoop campaign", "delightloop", "campaign.completed", `{"event":"campaign.completed","timestamp":"2025-11-22T02:55:20Z","data":{"campaignId":"camp_1"}}`,
			feedbackv1.SubjectType_SUBJECT_TYPE_CAMPAIGN, "camp_1"},
		{"a DelightLoop contact list", "delightloop", "contact_list.updated", `{"event":"contact_list.updated","timestamp":"2025-11-22T02:55:20Z","data":{"id":"cl_9"}}`,
			feedbackv1.SubjectType_SUBJECT_TYPE_CONTACT_LIST, "cl_9"},
		{"an unknown FeedBackPro event", "feedbackpro", "cart_abandoned", `{"event":"cart_abandoned","id":"evt_1","timestamp":"2025-11-22T02:55:20Z","data":{"x":{"y":1}}}`,
			feedbackv1.SubjectType_SUBJECT_TYPE_EVENT, "e1"},
		{"a Stripe event", "stripe", "customer.updated", `{"id":"evt_1Qs","type":"customer.updated","data":{"object":{"email":"a@b.c"}}}`,
			feedbackv1.SubjectType_SUBJECT_TYPE_EVENT, "e1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := mapAs(t, c.provider, c.typ, c.body)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind != feedbackv1.Kind_KIND_ENGAGEMENT || ev.Subject.Type != c.subjectType || ev.Subject.Id != c.subject || len(ev.Properties) == 0 || ev.ProviderEventType != c.typ {
				t.Fatalf("event = %v", ev)
			}
		})
	}
}

func TestAChatToSurveyResponseWithoutAConversationIsQuarantined(t *testing.T) {
	_, err := mapAs(t, "chattosurvey", "conversation.completed", `{"id":"u1","event":"conversation.completed","created_at":"2025-11-22T02:58:20Z","data":{}}`)
	if reason, ok := kafkaio.IsPermanent(err); !ok || reason != ReasonMissingID {
		t.Fatalf("err = %v", err)
	}
}

func TestAFiveStarRatingOutsideItsScaleIsQuarantined(t *testing.T) {
	_, err := mapAs(t, "feedbackpro", "rating_submitted", `{"event":"rating_submitted","id":"evt_1","timestamp":"2025-11-22T03:03:20Z","data":{"score":6}}`)
	if reason, ok := kafkaio.IsPermanent(err); !ok || reason != ReasonScoreOutOfScale {
		t.Fatalf("err = %v", err)
	}
}

func FuzzEveryMapperNeverPanics(f *testing.F) {
	f.Add(uint8(0), []byte(`{"event":"rating_submitted","id":"e","timestamp":"2025-11-22T03:03:20Z","data":{"score":"4"}}`))
	f.Add(uint8(1), []byte(`{"id":"u","event":"conversation.completed","data":{"conversation":{"id":"c"},"responses":[{"answer":"x","answer_type":"nps"}]}}`))
	f.Add(uint8(2), []byte(`{"event":"recipient.acknowledged","timestamp":1763780120,"data":{"recipientId":5}}`))
	for p := range providers.Names() { // strings that are not UTF-8, for every provider
		f.Add(uint8(p), []byte("{\"event\":\"rating_submitted\xff\",\"event_type\":\"survey_response.created\",\"id\":\"e\xfe\",\"event_id\":\"e\xc3\",\"data\":{\"score\":\"4\",\"comment\":\"\xff\",\"id\":\"\xfe\"},\"event_data\":{\"id\":\"1\xff\",\"score\":3,\"updated_at\":1,\"comment\":\"\xc3\"},\"form_response\":{\"token\":\"t\xff\",\"answers\":[{\"text\":\"\xfe\"}]}}"))
	}
	names := providers.Names() // every provider of the table
	f.Fuzz(func(t *testing.T, p uint8, body []byte) {
		ev, err := Map(&feedbackv1.RawWebhook{EventId: "e", Provider: names[int(p)%len(names)], Body: body}, time.Unix(0, 0))
		if err == nil && (ev.Subject == nil || ev.Subject.Id == "") {
			t.Fatalf("mapped without a subject: %s", body)
		}
		if err == nil {
			validProto3(t, ev, body)
		}
		if _, ok := kafkaio.IsPermanent(err); err != nil && !ok {
			t.Fatalf("a mapping error that is not a quarantine reason: %v", err)
		}
	})
}

func TestAnOperatorsTestEventIsFlaggedTestAndKeepsItsMeaning(t *testing.T) {
	body := []byte(`{"event_type":"survey_response.created","event_id":"closedloop-test-1","event_data":{"id":"t1","survey_type":"nps","score":10,"person":{"id":"p"},"created_at":1700000000,"updated_at":1700000000}}`)
	ev, err := Map(&feedbackv1.RawWebhook{EventId: "closedloop-test-1", Source: "s", Provider: "delighted", Body: body}, time.Unix(0, 0))
	if err != nil || !ev.Test || ev.Kind != feedbackv1.Kind_KIND_RESPONSE_CREATED || ev.GetScore().GetValue() != 10 {
		t.Fatalf("test event: %v %v", ev, err)
	}
	live, err := Map(&feedbackv1.RawWebhook{EventId: "42", Source: "s", Provider: "delighted", Body: body}, time.Unix(0, 0))
	if err != nil || live.Test {
		t.Fatalf("a live event flagged test: %v %v", live, err)
	}
}

// Every provider of the table has a mapping, every mapping serves a
// provider, and each provider's test event (the admin's sample) maps to an
// event flagged test with a subject.
func TestEveryProviderHasAMappingAndItsTestEventMaps(t *testing.T) {
	used := map[string]bool{}
	for _, p := range providers.All() {
		if _, ok := ForProvider(p.Name); !ok {
			t.Errorf("provider %s: no mapping %q", p.Name, p.Mapping)
			continue
		}
		used[p.Mapping] = true
		id := feedback.TestEventPrefix + "x1"
		hdr, body := p.Sample(id, time.Unix(1763800000, 0))
		eventType := ""
		if p.Type.Header != "" {
			eventType = hdr.Get(p.Type.Header)
		}
		ev, err := Map(&feedbackv1.RawWebhook{EventId: id, Source: "s", Provider: p.Name, EventType: eventType, Body: body,
			ReceivedAt: timestamppb.New(time.Unix(1763800000, 0))}, time.Unix(1763800000, 0))
		if err != nil || !ev.Test || ev.GetSubject().GetId() == "" {
			t.Errorf("provider %s: its test event maps to %v, %v", p.Name, ev, err)
		}
	}
	for name := range mappers {
		if !used[name] {
			t.Errorf("mapping %s serves no provider of the table", name)
		}
	}
}

// simd.go turns segmentio/asm's AVX2 paths off for the mappers (their
// JSON checks cost ~20× the portable code on the benchmark machine).
func TestTheMappersRunSegmentioAsmWithoutAVX2(t *testing.T) {
	if cpu.X86.Has(x86.AVX2) {
		t.Fatal("segmentio/asm still takes its AVX2 paths")
	}
}
