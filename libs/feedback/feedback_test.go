package feedback

import (
	"bytes"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

func TestDecodeQuarantinesWhatIsNotAUsableEvent(t *testing.T) {
	ok, _ := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: "e", Subject: &feedbackv1.Subject{Id: "s"}})
	noSubject, _ := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: "e"})
	cases := []struct {
		name   string
		value  []byte
		reason string
	}{{"a complete event", ok, ""}, {"an event without subject", noSubject, "missing_required_id"}, {"bytes that are not protobuf", []byte{0xff, 0xff}, "undecodable_record"}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.value)
			reason, _ := kafkaio.IsPermanent(err)
			if reason != c.reason || (c.reason == "" && err != nil) {
				t.Fatalf("err = %v, want reason %q", err, c.reason)
			}
		})
	}
}

// events are encoded events as the enricher meets them: fresh from the
// normalizer, replayed with an enrichment already set (even twice on the
// wire, which decodes as one merged), with fields a newer producer added.
func events(t testing.TB) [][]byte {
	t.Helper()
	now := timestamppb.Now()
	ev := &feedbackv1.FeedbackEvent{
		EventId: "delighted:r-1", Source: "delighted-main", Kind: feedbackv1.Kind_KIND_RESPONSE_CREATED, OccurredAt: now,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r-1"},
		Score:   &feedbackv1.Score{Value: 3, Max: 10}, Comment: proto.String("slow export"), Tags: []string{"a", "b"},
		Properties: map[string]*structpb.Value{"plan": structpb.NewStringValue("pro")}, RawPayload: []byte(`{"id":"r-1"}`),
		RawRef: &feedbackv1.RawRef{Topic: "raw", Offset: 7}, Origin: "webhook",
	}
	fresh, _ := proto.Marshal(ev)
	enriched := proto.Clone(ev).(*feedbackv1.FeedbackEvent)
	enriched.Enrichment = &feedbackv1.Enrichment{Labels: []string{"old"}, Lane: feedbackv1.Lane_LANE_PRIORITY, MatchedRules: []string{"r0"}}
	replayed, _ := proto.Marshal(enriched)
	twice := protowire.AppendTag(slices.Clone(replayed), enrichmentField, protowire.BytesType)
	extra, _ := proto.Marshal(&feedbackv1.Enrichment{RuleErrors: []string{"x"}})
	twice = protowire.AppendBytes(twice, extra)
	unknown := protowire.AppendTag(slices.Clone(fresh), 999, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "from a newer producer")
	empty, _ := proto.Marshal(&feedbackv1.FeedbackEvent{})
	return [][]byte{fresh, replayed, twice, unknown, empty}
}

// checkEnrichment checks that WithEnrichment's answer decodes to the event
// with en as its enrichment, as the decode, set and encode it replaces.
func checkEnrichment(t testing.TB, value []byte, en *feedbackv1.Enrichment) {
	t.Helper()
	var want feedbackv1.FeedbackEvent
	if err := proto.Unmarshal(value, &want); err != nil {
		t.Fatal(err)
	}
	// An input as proto.Marshal writes it (the normalizer's) yields no more
	// bytes than the encoding it replaces; another may repeat a field, kept.
	canonical, _ := proto.Marshal(&want)
	want.Enrichment = en
	wantBytes, err := proto.Marshal(&want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := WithEnrichment(value, en)
	if err != nil {
		t.Fatal(err)
	}
	var ev feedbackv1.FeedbackEvent
	if err := proto.Unmarshal(got, &ev); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&ev, &want) {
		t.Fatalf("decodes to\n%v\nwant\n%v", &ev, &want)
	}
	if string(ev.ProtoReflect().GetUnknown()) != string(want.ProtoReflect().GetUnknown()) {
		t.Fatal("unknown fields not kept")
	}
	if bytes.Equal(canonical, value) && len(got) != len(wantBytes) {
		t.Fatalf("%d bytes, proto.Marshal writes %d", len(got), len(wantBytes))
	}
}

func TestWithEnrichmentIsTheEventWithItsEnrichmentReplaced(t *testing.T) {
	ens := []*feedbackv1.Enrichment{
		nil, // removes it
		{},
		{Lane: feedbackv1.Lane_LANE_STANDARD, EnrichedAt: timestamppb.Now(), Labels: []string{"at-risk"}, MatchedRules: []string{"detractor"},
			Lookups: map[string]*feedbackv1.LookupResult{"crm": {Status: feedbackv1.LookupStatus_LOOKUP_STATUS_FOUND,
				Fields: map[string]*structpb.Value{"arr": structpb.NewNumberValue(1200)}}}},
	}
	for _, v := range events(t) {
		for _, en := range ens {
			checkEnrichment(t, v, en)
		}
	}
}

func TestWithEnrichmentRefusesWhatIsNotAnEncoding(t *testing.T) {
	fresh := events(t)[0]
	for _, bad := range [][]byte{fresh[:len(fresh)-1], {0xff, 0xff, 0xff}, append(slices.Clone(fresh), 0x0a, 0x05, 'a')} {
		if _, err := WithEnrichment(bad, &feedbackv1.Enrichment{}); err == nil {
			t.Fatalf("% x was taken", bad)
		}
	}
	if _, err := WithEnrichment(fresh, &feedbackv1.Enrichment{Labels: []string{"\xff"}}); err == nil {
		t.Fatal("an enrichment that is not valid UTF-8 was encoded")
	}
}

func FuzzWithEnrichment(f *testing.F) {
	for _, v := range events(f) {
		f.Add(v)
	}
	en := &feedbackv1.Enrichment{Labels: []string{"l"}, Lane: feedbackv1.Lane_LANE_PRIORITY}
	f.Fuzz(func(t *testing.T, b []byte) {
		if proto.Unmarshal(b, &feedbackv1.FeedbackEvent{}) != nil {
			return
		}
		checkEnrichment(t, b, en)
	})
}

// The enricher's encode step: the event re-encoded whole, against the
// enrichment spliced into the bytes it came as.
func BenchmarkEnrichedEncoding(b *testing.B) {
	value := events(b)[0]
	var ev feedbackv1.FeedbackEvent
	if err := proto.Unmarshal(value, &ev); err != nil {
		b.Fatal(err)
	}
	en := &feedbackv1.Enrichment{Lane: feedbackv1.Lane_LANE_STANDARD, EnrichedAt: timestamppb.Now(),
		Lookups: map[string]*feedbackv1.LookupResult{"crm": {Status: feedbackv1.LookupStatus_LOOKUP_STATUS_NO_KEY}}}
	ev.Enrichment = en
	b.Run("marshal-event", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := proto.Marshal(&ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("with-enrichment", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := WithEnrichment(value, en); err != nil {
				b.Fatal(err)
			}
		}
	})
}
