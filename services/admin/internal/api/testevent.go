package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/feedback"
	"github.com/closedloop/closedloop/libs/providers"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	"github.com/closedloop/closedloop/services/admin/internal/offsets"
	"github.com/closedloop/closedloop/services/admin/internal/randid"
)

// SendTestEvent implements AdminService.
// withoutURL drops the request URL from an HTTP client error: the test
// event's URL holds its temporary ingest token, which must not reach the
// caller, the audit topic or the log.
func withoutURL(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("%s: %w", uerr.Op, uerr.Err)
	}
	return err
}

func (s *Server) SendTestEvent(ctx context.Context, req *adminv1.SendTestEventRequest) (*adminv1.SendTestEventResponse, error) {
	if err := s.source(req.Source); err != nil {
		return nil, err
	}
	src, _ := s.o.Pipeline().Source(req.Source)
	prov, ok := providers.Get(src.Provider)
	if !ok {
		return nil, fault.Errorf(fault.Conflict, "%s is a %s source, a provider closedloop does not know", src.Name, src.Provider)
	}
	if prov.Signs() && len(src.Secrets) == 0 {
		return nil, fault.Errorf(fault.Conflict, "%s has no signing secret the admin service can read (its secrets must resolve in the admin's environment)", src.Name)
	}
	timeout := 30 * time.Second
	if req.TimeoutSeconds > 0 {
		timeout = min(time.Duration(req.TimeoutSeconds)*time.Second, 5*time.Minute)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := s.o.Topics
	watched := []string{t.Raw, t.Normalized, t.Enriched, t.Priority}
	for _, st := range s.o.Stages {
		if st.Sink != "" {
			watched = append(watched, t.DLQ(st.Sink))
		}
	}
	// Where each topic ends now: the test event can only be after these.
	cursor, err := s.o.Offsets.Ends(ctx, dedupe(watched))
	if err != nil {
		return nil, fault.Errorf(fault.Unavailable, "reading the topics' ends: %v", err)
	}

	// A temporary ingest token: the admin never holds the sources' own tokens.
	token, tok, err := s.o.Tokens.Issue(ctx, s.o.Producer, src.Name, "test-event by "+CallerOf(ctx).Name)
	if err != nil {
		return nil, fault.Errorf(fault.Conflict, "a temporary ingest token for the test event: %v (a source has at most two; revoke one)", err)
	}
	defer func() {
		if err := s.o.Tokens.Revoke(context.WithoutCancel(ctx), s.o.Producer, src.Name, tok.ID); err != nil {
			s.o.Log.Error("the test event's temporary token was not revoked: revoke it by hand", "source", src.Name, "token_id", tok.ID, "error", err.Error())
		}
	}()
	// The provider's own sample, signed the provider's way with the source's
	// current secret: the ingress verifies it like any webhook.
	id := randid.New(feedback.TestEventPrefix, 12)
	extra, body := prov.Sample(id, time.Now())
	var scheme *providers.HMAC
	if prov.Configurable() {
		extra, body = providers.SampleAt(id, time.Now(), providers.FieldRef(src.EventID), providers.FieldRef(src.EventType))
		spec := src.HMAC.Spec()
		scheme = &spec
	}
	var secret []byte
	if len(src.Secrets) > 0 {
		secret = src.Secrets[0].Reveal()
	}
	headers, err := providers.Sign(prov, scheme, secret, id, body, extra, time.Now())
	if err != nil {
		return nil, fault.Errorf(fault.Conflict, "signing the test event for %s: %v", src.Name, err)
	}
	// The ingress names the event by the same rule (a provider without ids
	// gets one derived from the body): follow it under that name.
	idRef, typeRef := prov.ID, prov.Type
	if src.EventID != (config.FieldRef{}) {
		idRef = providers.FieldRef(src.EventID)
	}
	if src.EventType != (config.FieldRef{}) {
		typeRef = providers.FieldRef(src.EventType)
	}
	id = providers.Identify(src.Name, idRef, typeRef, prov.TestTypes, headers, body).EventID
	resp := &adminv1.SendTestEventResponse{EventId: id}
	start := time.Now()
	reached := func(stage, detail string) {
		resp.Stages = append(resp.Stages, &adminv1.StageReached{Stage: stage, Reached: true, AfterMs: time.Since(start).Milliseconds(), Detail: detail})
	}
	missed := func(stage, why string) {
		resp.Stages = append(resp.Stages, &adminv1.StageReached{Stage: stage, Detail: why})
	}
	// Every ingress replica follows the control topic and accepts the new
	// token within a second: until then it answers 404.
	target := strings.TrimRight(s.o.IngressURL, "/") + "/v1/hooks/" + src.Name + "/" + token
	var hres *http.Response
	for {
		hreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		hreq.Header = headers.Clone()
		hres, err = http.DefaultClient.Do(hreq)
		if err != nil {
			return nil, fault.Errorf(fault.Unavailable, "POST to the ingress at %s: %v (ADMIN_INGRESS_URL)", s.o.IngressURL, withoutURL(err))
		}
		hres.Body.Close()
		if hres.StatusCode != http.StatusNotFound || time.Since(start) > 5*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp.IngressStatus = int32(hres.StatusCode)
	if hres.StatusCode != http.StatusAccepted {
		missed("ingress", fmt.Sprintf("answered %d", hres.StatusCode))
		return resp, nil
	}
	reached("ingress", "202 Accepted: written to Kafka with acks=all")

	find := func(topic string, match func(kafka.Message) bool) (kafka.Message, bool) {
		return s.waitFor(ctx, []string{topic}, cursor, match)
	}
	if m, ok := find(t.Raw, func(m kafka.Message) bool { return string(m.Key) == id }); ok {
		reached("raw", fmt.Sprintf("%s partition %d offset %d", m.Topic, m.Partition, m.Offset))
	} else {
		missed("raw", "not on "+t.Raw+" in time")
		return resp, nil
	}
	isOurs := func(m kafka.Message) bool {
		var ev feedbackv1.FeedbackEvent
		return proto.Unmarshal(m.Value, &ev) == nil && ev.EventId == id
	}
	if m, ok := find(t.Normalized, isOurs); ok {
		reached("normalized", fmt.Sprintf("%s partition %d offset %d (flagged test)", m.Topic, m.Partition, m.Offset))
	} else {
		missed("normalized", "not on "+t.Normalized+" in time (quarantined? see closedloopctl status and the quarantine topic)")
		return resp, nil
	}
	lane, found := s.waitFor(ctx, []string{t.Priority, t.Enriched}, cursor, isOurs)
	if !found {
		missed("enriched", "on neither lane in time")
		return resp, nil
	}
	reached("enriched", fmt.Sprintf("%s partition %d offset %d", lane.Topic, lane.Partition, lane.Offset))

	// Each sink: its group committed past the event (delivered or
	// filtered), or it dead-lettered it.
	complete := true
	for _, st := range s.o.Stages {
		if st.Sink == "" {
			continue
		}
		done := false
		// Its own cursor on the DLQ topic: the destinations of one sink share it.
		dlqCursor := map[string]map[int]int64{t.DLQ(st.Sink): maps.Clone(cursor[t.DLQ(st.Sink)])}
		for ctx.Err() == nil && !done {
			if m, ok := s.findOnce(ctx, t.DLQ(st.Sink), dlqCursor, func(m kafka.Message) bool {
				var dl sinkv1.DeadLetter
				return proto.Unmarshal(m.Value, &dl) == nil && dl.EventId == id && (dl.Destination == "" || strings.HasSuffix(st.Name, "/"+dl.Destination) || st.Name == st.Sink)
			}); ok {
				var dl sinkv1.DeadLetter
				_ = proto.Unmarshal(m.Value, &dl)
				reached(st.Name, "DEAD-LETTERED: "+dl.Error)
				complete, done = false, true
				break
			}
			parts, err := s.o.Offsets.Group(ctx, st.Group, []string{lane.Topic})
			if err == nil {
				for _, p := range parts {
					if p.Partition == lane.Partition && p.Committed > lane.Offset {
						reached(st.Name, "delivered (its consumer group committed past the event)")
						done = true
					}
				}
			}
			if !done {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if !done {
			missed(st.Name, "not delivered in time (paused, breaker open, or behind: closedloopctl status)")
			complete = false
		}
	}
	resp.Complete = complete
	return resp, nil
}

// waitFor looks for a matching record written to topics after cursor,
// until ctx ends.
func (s *Server) waitFor(ctx context.Context, topics []string, cursor map[string]map[int]int64, match func(kafka.Message) bool) (kafka.Message, bool) {
	for {
		for _, topic := range topics {
			if m, ok := s.findOnce(ctx, topic, cursor, match); ok {
				return m, true
			}
		}
		select {
		case <-ctx.Done():
			return kafka.Message{}, false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// findOnce reads what topic holds after cursor, once, and moves the cursor
// past what it read, so no record is read twice.
func (s *Server) findOnce(ctx context.Context, topic string, cursor map[string]map[int]int64, match func(kafka.Message) bool) (kafka.Message, bool) {
	ends, err := s.o.Offsets.Ends(ctx, []string{topic})
	if err != nil {
		return kafka.Message{}, false
	}
	for p, end := range ends[topic] {
		var found *kafka.Message
		err := offsets.ReadRange(ctx, s.o.Brokers, topic, p, cursor[topic][p], end, func(m kafka.Message) (bool, error) {
			if match(m) {
				found = &m
				return false, nil
			}
			return true, nil
		})
		if found != nil {
			return *found, true
		}
		if err == nil {
			cursor[topic][p] = end
		}
	}
	return kafka.Message{}, false
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
