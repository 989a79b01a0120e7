package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiver verifies every request as a Standard Webhooks receiver would and
// answers what the test scripts.
type receiver struct {
	mu      sync.Mutex
	ids     []string
	answers []int          // next statuses; 200 when empty
	byID    map[string]int // the status of an id (every time), before answers
	bad     []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	key, _ := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	m := hmac.New(sha256.New, key)
	m.Write([]byte(req.Header.Get("webhook-id") + "." + req.Header.Get("webhook-timestamp") + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	r.mu.Lock()
	defer r.mu.Unlock()
	var ev map[string]any
	if req.Header.Get("webhook-signature") != want || json.Unmarshal(body, &ev) != nil || ev["event_id"] != req.Header.Get("webhook-id") {
		r.bad = append(r.bad, req.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	status := 200
	if st, ok := r.byID[req.Header.Get("webhook-id")]; ok {
		status = st
	} else if len(r.answers) > 0 {
		status, r.answers = r.answers[0], r.answers[1:]
	}
	if status/100 == 2 {
		r.ids = append(r.ids, req.Header.Get("webhook-id"))
	}
	w.WriteHeader(status)
}

// memFlag is a Flag in memory; Deliver posts in parallel, so it locks.
type memFlag struct {
	mu  sync.Mutex
	why string
}

func (f *memFlag) Disabled(context.Context) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.why, f.why != "", nil
}

func (f *memFlag) Disable(_ context.Context, why string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.why = why
	return nil
}

func (f *memFlag) Enable(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.why = ""
	return nil
}

func events(ids ...string) []*sink.Event {
	out := make([]*sink.Event, len(ids))
	for i, id := range ids {
		out[i] = &sink.Event{Ctx: context.Background(), Feedback: &feedbackv1.FeedbackEvent{EventId: id, Source: "dl", Kind: feedbackv1.Kind_KIND_RESPONSE_CREATED}}
	}
	return out
}

func TestEventsArriveSignedPerStandardWebhooksAndOnly2xxCounts(t *testing.T) {
	rcv := &receiver{byID: map[string]int{"b": 503}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	e, err := New(context.Background(), "crm", srv.URL, []byte(secret), 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := e.Deliver(context.Background(), events("a", "b", "c"))
	if errs == nil || errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("results %v, want b to fail", errs)
	}
	if class, _, status := sink.Classify(errs[1]); class != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE || status != 503 {
		t.Fatalf("503 classified %v/%d", class, status)
	}
	if len(rcv.bad) != 0 || len(rcv.ids) != 2 {
		t.Fatalf("receiver rejected %v, accepted %v", rcv.bad, rcv.ids)
	}
}

func TestAfterARetryableFailureLaterVersionsOfThatSubjectWait(t *testing.T) {
	rcv := &receiver{byID: map[string]int{"r1-v1": 503}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	e, err := New(context.Background(), "crm", srv.URL, []byte(secret), 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs := events("r1-v1", "other", "r1-v2")
	for _, i := range []int{0, 2} {
		evs[i].Feedback.Subject = &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r1"}
	}
	errs := e.Deliver(context.Background(), evs)
	if errs == nil || errs[0] == nil || errs[1] != nil || errs[2] == nil {
		t.Fatalf("results %v, want r1-v1 failed, other delivered, r1-v2 held", errs)
	}
	if class, _, _ := sink.Classify(errs[2]); class != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE {
		t.Fatalf("held event classified %v", class)
	}
	if len(rcv.ids) != 1 || rcv.ids[0] != "other" {
		t.Fatalf("receiver accepted %v, want only the other subject's event", rcv.ids)
	}
}

func TestGoneDisablesTheEndpointAndKeepsItDisabled(t *testing.T) {
	rcv := &receiver{byID: map[string]int{"a": 410, "b": 410}} // a gone receiver answers 410 to everything
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	flag := &memFlag{}
	e, _ := New(context.Background(), "old", srv.URL, []byte(secret), time.Second, flag)
	errs := e.Deliver(context.Background(), events("a", "b"))
	for i, err := range errs {
		if class, _, _ := sink.Classify(err); class != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT {
			t.Fatalf("event %d: %v (%v), want permanent", i, err, class)
		}
	}
	if rcv.ids != nil || func() bool { why, _, _ := flag.Disabled(context.Background()); return why == "" }() {
		t.Fatalf("receiver got %v, flag %q", rcv.ids, flag.why)
	}
	// A restart reads the flag: still disabled, no request sent.
	again, _ := New(context.Background(), "old", srv.URL, []byte(secret), time.Second, flag)
	if _, off := again.Disabled(); !off {
		t.Fatal("a restarted endpoint forgot its 410")
	}
}

func TestAnUnreachableEndpointIsRetryable(t *testing.T) {
	e, _ := New(context.Background(), "down", "http://127.0.0.1:1/hook", []byte("plain-secret"), time.Second, nil)
	errs := e.Deliver(context.Background(), events("a"))
	if class, _, _ := sink.Classify(errs[0]); class != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE {
		t.Fatalf("%v classified %v", errs[0], class)
	}
}

func TestABadWhsecSecretIsRefused(t *testing.T) {
	if _, err := New(context.Background(), "x", "http://127.0.0.1/", []byte("whsec_not base64!"), time.Second, nil); err == nil {
		t.Fatal("accepted a whsec_ secret that is not base64")
	}
}

// A process that dies while one event of a batch is still being retried
// has recorded the others the moment their 2xx came: the batch, delivered
// again to the next process, sends only that event again.
func TestAfterACrashMidBatchOnlyTheUnacknowledgedEventIsSentAgain(t *testing.T) {
	rcv := &receiver{byID: map[string]int{"c": http.StatusServiceUnavailable}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	cp := &sinktest.MemoryCheckpoint{}
	runner := func() *sink.Runner {
		e, err := New(context.Background(), "receiver", srv.URL, []byte(secret), 2*time.Second, &memFlag{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := sink.New(sink.Config{Sink: "sink-test", DLQTopic: sinktest.DLQTopic, DLQ: &sinktest.Records{}, Checkpoint: cp,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), BackoffBase: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
			MaxAttempts: 1000, MaxElapsed: time.Hour, Breaker: retry.NewBreaker(1000, time.Second, nil)}, e)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	batch := make([]kafkaio.Delivery, 3)
	for i, id := range []string{"a", "b", "c"} {
		v, err := proto.Marshal(&feedbackv1.FeedbackEvent{EventId: id, Source: "dl",
			Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r-" + id}})
		if err != nil {
			t.Fatal(err)
		}
		batch[i] = kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Topic: "in", Offset: int64(i), Value: v}}
	}
	// The first process stops (dies) while c is being retried: nothing of the batch is committed.
	ctx, stop := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer stop()
	if errs := runner().HandleBatch(ctx, batch); errs == nil {
		t.Fatal("the batch was done although c was never accepted")
	}
	rcv.mu.Lock()
	delete(rcv.byID, "c")
	rcv.mu.Unlock()
	if errs := runner().HandleBatch(context.Background(), batch); errs != nil {
		t.Fatalf("the batch again: %v", errs)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if fmt.Sprint(rcv.ids) != "[a b c]" && fmt.Sprint(rcv.ids) != "[b a c]" {
		t.Fatalf("accepted %v, want a and b once before the crash and c once after", rcv.ids)
	}
}
