package ingest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// The hand-written encoder produces what the generated code decodes into
// the message built field by field, for every field set or empty.
func TestRawRecordEncodesTheRawWebhookMessage(t *testing.T) {
	long := strings.Repeat("ä", 200) // 400 bytes: cut to 256, on a rune boundary
	cases := []struct {
		name   string
		rec    rawRecord
		header http.Header
	}{
		{"full", rawRecord{eventID: "ev_1", source: "delighted", provider: "delighted", eventType: "survey_response.updated", instance: "ingress-0",
			received: time.Date(2026, 12, 1, 5, 0, 0, 123456789, time.UTC), body: []byte(`{"a":1}`), test: true},
			http.Header{"Content-Type": {"application/json"}, "User-Agent": {"Delighted"}, "X-Typeform-Signature": {"x"}, "Stripe-Id": {long}}},
		{"empty fields", rawRecord{received: time.Unix(1700000000, 0)}, http.Header{}},
		{"epoch", rawRecord{eventID: "e", received: time.Unix(0, 0), body: []byte{0, 1, 2}}, http.Header{"User-Agent": {""}}},
		{"repeated header keeps the first", rawRecord{source: "s", received: time.Unix(5, 7)}, http.Header{"User-Agent": {"one", "two"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.rec.header = c.header
			provider := []string{"stripe-id", "Content-Type"} // a duplicate of a base header, lower-case as configured
			c.rec.kept = keptHeadersOf(provider)
			got := &feedbackv1.RawWebhook{}
			enc := c.rec.appendProto(nil)
			if len(enc) > c.rec.size() {
				t.Fatalf("encoded %d bytes, size() promised at most %d", len(enc), c.rec.size())
			}
			if err := proto.Unmarshal(enc, got); err != nil {
				t.Fatal(err)
			}
			want := &feedbackv1.RawWebhook{EventId: c.rec.eventID, Source: c.rec.source, Provider: c.rec.provider, EventType: c.rec.eventType,
				ReceivedAt: timestamppb.New(c.rec.received), Body: c.rec.body, Test: c.rec.test, IngressInstance: c.rec.instance, Headers: map[string]string{}}
			for _, n := range append(append([]string{}, baseHeaders...), provider...) {
				if v := c.header.Get(n); v != "" {
					if len(v) > maxKeptHeader {
						v = strings.ToValidUTF8(v[:maxKeptHeader], "")
					}
					want.Headers[strings.ToLower(n)] = v
				}
			}
			if len(want.Headers) == 0 {
				want.Headers = nil
			}
			if len(want.Body) == 0 {
				want.Body = nil
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoded %v\nwant    %v", got, want)
			}
		})
	}
}

// The answers' JSON strings are escaped exactly as encoding/json does.
func TestAppendJSONStringEscapesAsEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " backslash \ slash /`, "<script>&amp;</script>", "tab\tnl\nret\r\x00\x1f\x7f\b\f",
		"ümlaut ✓ 😀", "bad \xff utf-8 \xc3", "line\u2028para\u2029", strings.Repeat("x", 300)} {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("a\"b<\u2028\xff")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}
