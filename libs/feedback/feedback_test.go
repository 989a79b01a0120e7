package feedback

import (
	"testing"

	"google.golang.org/protobuf/proto"

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
