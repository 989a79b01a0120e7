package console

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

func TestAnEventIsPrintedAsOneReadableLine(t *testing.T) {
	c := "Sehr gut"
	b, _ := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: "e1", Source: "dl", Kind: feedbackv1.Kind_KIND_RESPONSE_UPDATED,
		Subject: &feedbackv1.Subject{Id: "5435"}, Score: &feedbackv1.Score{Value: 3, Max: 10}, Segment: feedbackv1.Segment_SEGMENT_DETRACTOR,
		Respondent: &feedbackv1.Respondent{Email: "a@b.de"}, Comment: &c})
	var out bytes.Buffer
	if err := (&Printer{Out: &out}).Handle(context.Background(), kafka.Message{Value: b}); err != nil {
		t.Fatal(err)
	}
	line := out.String()
	for _, want := range []string{"response_updated", "dl/5435", "score=3/10", "detractor", "<a@b.de>", `"Sehr gut"`, "event_id=e1"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if strings.Count(line, "\n") != 1 {
		t.Errorf("not one line: %q", line)
	}
}
