// Package console prints enriched FeedbackEvents, one line each, for
// development stacks without PostgreSQL. It keeps no checkpoint: a
// redelivered event is printed again.
package console

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/closedloop/closedloop/libs/feedback"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/pbjson"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Printer writes events to Out as text lines or, with JSON, as protojson.
type Printer struct {
	Out  io.Writer
	JSON bool
	mu   sync.Mutex
}

// Handle implements kafkaio.Handler.
func (p *Printer) Handle(_ context.Context, m kafka.Message) error {
	ev, err := feedback.Decode(m.Value)
	if err != nil {
		return err
	}
	var line string
	if p.JSON {
		b, err := pbjson.Marshal(ev)
		if err != nil {
			return kafkaio.Permanent(kafkaio.ReasonUnencodableEvent, err)
		}
		line = string(b)
	} else {
		line = Line(ev)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err = fmt.Fprintln(p.Out, line)
	return err
}

// Line is a one-line human summary of an event.
func Line(ev *feedbackv1.FeedbackEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-18s %s/%s", ev.GetOccurredAt().AsTime().Format("15:04:05"),
		strings.ToLower(strings.TrimPrefix(ev.Kind.String(), "KIND_")), ev.Source, ev.GetSubject().GetId())
	if s := ev.Score; s != nil {
		fmt.Fprintf(&b, " score=%g/%g", s.Value, s.Max)
	}
	if ev.Segment != feedbackv1.Segment_SEGMENT_UNSPECIFIED {
		fmt.Fprintf(&b, " %s", strings.ToLower(strings.TrimPrefix(ev.Segment.String(), "SEGMENT_")))
	}
	if e := ev.GetRespondent().GetEmail(); e != "" {
		fmt.Fprintf(&b, " <%s>", e)
	}
	if ev.Comment != nil {
		fmt.Fprintf(&b, " %q", ev.GetComment())
	}
	if en := ev.GetEnrichment(); en != nil {
		fmt.Fprintf(&b, " lane=%s", strings.ToLower(strings.TrimPrefix(en.Lane.String(), "LANE_")))
		if len(en.Labels) > 0 {
			fmt.Fprintf(&b, " labels=%s", strings.Join(en.Labels, ","))
		}
		for name, r := range en.Lookups {
			if r.Status != feedbackv1.LookupStatus_LOOKUP_STATUS_FOUND {
				fmt.Fprintf(&b, " %s=%s", name, strings.ToLower(strings.TrimPrefix(r.Status.String(), "LOOKUP_STATUS_")))
				continue
			}
			for _, f := range sortedFields(r.Fields) {
				fmt.Fprintf(&b, " %s.%s=%v", name, f, r.Fields[f].AsInterface())
			}
		}
	}
	fmt.Fprintf(&b, " event_id=%s", ev.EventId)
	return b.String()
}

func sortedFields(m map[string]*structpb.Value) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
