package mapping

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/vectors"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// TestEveryAcceptedVectorMapsToItsCanonicalMeaning checks each accepted
// vector against its expect.canonical (or its expect.quarantine reason).
func TestEveryAcceptedVectorMapsToItsCanonicalMeaning(t *testing.T) {
	f, _, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range f.Vectors {
		if v.Expect.Verdict != "accept" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			if _, ok := ForProvider(v.Provider); !ok {
				t.Fatalf("provider %q has no mapping", v.Provider)
			}
			raw := &feedbackv1.RawWebhook{EventId: v.Expect.EventID, Source: "src", Provider: v.Provider, EventType: v.Expect.EventType,
				Body: []byte(v.Request.Body), ReceivedAt: timestamppb.New(time.Unix(v.Now, 0)), Test: v.Expect.Canonical["kind"] == "test"}
			if raw.EventId == "" {
				raw.EventId = "derived-" + v.Name
			}
			ev, err := Map(raw, time.Unix(v.Now, 0))
			if v.Expect.Quarantine != "" {
				reason, ok := kafkaio.IsPermanent(err)
				if !ok || reason != v.Expect.Quarantine {
					t.Fatalf("got %v, want quarantine %q", err, v.Expect.Quarantine)
				}
				return
			}
			if v.Expect.Canonical == nil {
				// No meaning is expected (e.g. GitHub's published example, whose
				// body is not JSON): mapped, or quarantined with a reason.
				if _, perm := kafkaio.IsPermanent(err); err != nil && !perm {
					t.Fatalf("neither mapped nor quarantined: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("mapping failed: %v", err)
			}
			for _, problem := range vectors.Compare(ev, v.Expect.Canonical) {
				t.Error(problem)
			}
		})
	}
}
