package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

const (
	token  = "tok_0123456789abcdefghijklmnop"
	secret = "dl_live_k3y9f8e7d6c5b4a"
)

type recorder struct {
	mu   sync.Mutex
	recs []kafkaio.Record
	err  error
}

func (r *recorder) Produce(_ context.Context, recs ...kafkaio.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	// A producer is done with a record once Produce returns (the handler
	// reuses its buffers): keep copies.
	for _, rec := range recs {
		rec.Key, rec.Value = slices.Clone(rec.Key), slices.Clone(rec.Value)
		r.recs = append(r.recs, rec)
	}
	return nil
}

// listen serves h on a loopback port as the ingress serves it and returns
// its URL.
func listen(t testing.TB, h *Handler, o ServerOptions) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := h.Server(o)
	go func() { _ = srv.Serve(Lingering(lis)) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + lis.Addr().String()
}

type testServer struct{ URL string }

func server(t *testing.T, p Producer) testServer {
	t.Helper()
	return testServer{listen(t, handler(t, p), ServerOptions{})}
}

// handler serves one Delighted source (secret, token) with a 4 KiB body limit.
func handler(t *testing.T, p Producer) *Handler {
	t.Helper()
	pipe, err := config.ParsePipeline([]byte(`
sources:
  - name: delighted
    provider: delighted
    secrets: [env:K]
    ingest_tokens: [env:T]
`), func(k string) (string, bool) { return map[string]string{"K": secret, "T": token}[k], true })
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Pipeline: pipe, Producer: p, RawTopic: "raw", MaxBody: 4096, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return time.Unix(1763800000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// traceIDOf is the trace a stored record carries.
func traceIDOf(rec kafkaio.Record) trace.TraceID {
	return trace.SpanContextFromContext(rec.Context).TraceID()
}

func sign(body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func post(t *testing.T, url, ct, sig, body string) (*http.Response, answer) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if sig != "" {
		req.Header.Set("X-Delighted-Webhook-Signature", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	_ = json.NewDecoder(resp.Body).Decode(&a)
	return resp, a
}

const body = `{"event_type":"survey_response.created","event_id":"abc123","event_data":{"id":"1","score":9}}`

func TestAnAuthenticWebhookIsStoredBeforeItIsAccepted(t *testing.T) {
	rec := &recorder{}
	s := server(t, rec)
	resp, a := post(t, s.URL+"/v1/hooks/delighted/"+token, "application/json", sign(body), body)
	if resp.StatusCode != http.StatusAccepted || a.EventID != "abc123" {
		t.Fatalf("status %d, answer %+v", resp.StatusCode, a)
	}
	if len(rec.recs) != 1 || string(rec.recs[0].Key) != "abc123" || rec.recs[0].Topic != "raw" {
		t.Fatalf("records = %+v", rec.recs)
	}
	var raw feedbackv1.RawWebhook
	if err := proto.Unmarshal(rec.recs[0].Value, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw.Body) != body || raw.Source != "delighted" || raw.Provider != "delighted" || raw.EventType != "survey_response.created" {
		t.Fatalf("raw webhook = %v", &raw)
	}
	for k := range raw.Headers {
		if strings.Contains(k, "signature") {
			t.Fatalf("signature header kept: %v", raw.Headers)
		}
	}
}

func TestRejectionsHaveTheirStatusAndReasonAndStoreNothing(t *testing.T) {
	rec := &recorder{}
	s := server(t, rec)
	cases := []struct {
		name, path, ct, sig, body string
		status                    int
		reason                    string
	}{
		{"a tampered body", "/v1/hooks/delighted/" + token, "application/json", sign(body), strings.Replace(body, "9", "0", 1), 401, "bad_signature"},
		{"no signature", "/v1/hooks/delighted/" + token, "application/json", "", body, 401, "missing_signature"},
		{"an unknown source", "/v1/hooks/nosuch/" + token, "application/json", sign(body), body, 404, "unknown_source"},
		{"a wrong token", "/v1/hooks/delighted/tok_wrong0123456789abcdefghij", "application/json", sign(body), body, 404, "unknown_source"},
		{"a non-JSON media type", "/v1/hooks/delighted/" + token, "text/plain", sign(body), body, 415, "unsupported_media_type"},
		{"a body over the limit", "/v1/hooks/delighted/" + token, "application/json", sign(strings.Repeat("x", 5000)), strings.Repeat("x", 5000), 413, "payload_too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, a := post(t, s.URL+c.path, c.ct, c.sig, c.body)
			if resp.StatusCode != c.status || a.Error != c.reason {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, a.Error, c.status, c.reason)
			}
		})
	}
	if len(rec.recs) != 0 {
		t.Fatalf("rejected requests produced %d records", len(rec.recs))
	}
}

func TestOtherMethodsGet405(t *testing.T) {
	s := server(t, &recorder{})
	resp, err := http.Get(s.URL + "/v1/hooks/delighted/" + token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET got %d", resp.StatusCode)
	}
}

func TestWhenKafkaCannotTakeTheEventTheAnswerIs503WithRetryAfter(t *testing.T) {
	s := server(t, &recorder{err: errors.New("kafka: not enough replicas")})
	resp, a := post(t, s.URL+"/v1/hooks/delighted/"+token, "application/json", sign(body), body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || a.Error != "unavailable" {
		t.Fatalf("got %d, Retry-After %q, %+v", resp.StatusCode, resp.Header.Get("Retry-After"), a)
	}
}

func TestASourceOverItsRateLimitGets429WithRetryAfter(t *testing.T) {
	pipe, err := config.ParsePipeline([]byte(`
sources:
  - name: delighted
    provider: delighted
    secrets: [env:K]
    ingest_tokens: [env:T]
    rate_limit: {per_second: 0.5, burst: 2}
`), func(k string) (string, bool) { return map[string]string{"K": secret, "T": token}[k], true })
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Pipeline: pipe, Producer: &recorder{}, RawTopic: "raw", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s := testServer{listen(t, h, ServerOptions{})}
	var codes []int
	var retry string
	for range 3 {
		resp, _ := post(t, s.URL+"/v1/hooks/delighted/"+token, "application/json", sign(body), body)
		codes = append(codes, resp.StatusCode)
		retry = resp.Header.Get("Retry-After")
	}
	if codes[0] != 202 || codes[1] != 202 || codes[2] != 429 || retry != "2" {
		t.Fatalf("codes %v, Retry-After %q; want 202 202 429 with Retry-After 2", codes, retry)
	}
	// A reload with a higher limit keeps the bucket (no fresh burst) but raises the rate.
	if err := h.Reload(pipe); err != nil {
		t.Fatal(err)
	}
	if resp, _ := post(t, s.URL+"/v1/hooks/delighted/"+token, "application/json", sign(body), body); resp.StatusCode != 429 {
		t.Fatalf("a reload handed out a fresh burst: %d", resp.StatusCode)
	}
}

type blockingProducer struct{ release chan struct{} }

func (b *blockingProducer) Produce(ctx context.Context, _ ...kafkaio.Record) error {
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestRequestsPastTheInFlightBoundGet503InsteadOfQueueing(t *testing.T) {
	pipe, _ := config.ParsePipeline([]byte("sources:\n  - name: delighted\n    provider: delighted\n    secrets: [env:K]\n    ingest_tokens: [env:T]\n"),
		func(k string) (string, bool) { return map[string]string{"K": secret, "T": token}[k], true })
	bp := &blockingProducer{release: make(chan struct{})}
	h, err := New(Options{Pipeline: pipe, Producer: bp, RawTopic: "raw", MaxInFlight: 2, SourceMaxInFlight: 10, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s := testServer{listen(t, h, ServerOptions{})}
	results := make(chan int, 2)
	for range 2 {
		go func() {
			resp, _ := post(t, s.URL+"/v1/hooks/delighted/"+token, "application/json", sign(body), body)
			results <- resp.StatusCode
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for n, _ := h.budget.inFlight(); n < 2 && time.Now().Before(deadline); n, _ = h.budget.inFlight() {
		time.Sleep(5 * time.Millisecond)
	}
	resp, a := post(t, s.URL+"/v1/hooks/delighted/"+token, "application/json", sign(body), body)
	if resp.StatusCode != 503 || a.Error != "overloaded" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %d %+v", resp.StatusCode, a)
	}
	close(bp.release)
	if c1, c2 := <-results, <-results; c1 != 202 || c2 != 202 {
		t.Fatalf("the two in flight got %d and %d", c1, c2)
	}
}

func TestATestDeliveryIsAcceptedAndMarked(t *testing.T) {
	pipe, _ := config.ParsePipeline([]byte("sources:\n  - name: chat\n    provider: chattosurvey\n    ingest_tokens: [env:T]\n"),
		func(k string) (string, bool) { return token, true })
	rec := &recorder{}
	h, _ := New(Options{Pipeline: pipe, Producer: rec, RawTopic: "raw", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s := testServer{listen(t, h, ServerOptions{})}
	req, _ := http.NewRequest("POST", s.URL+"/v1/hooks/chat/"+token, strings.NewReader(`{"id":"u1","event":"test.webhook"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Event", "test.webhook")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	_ = json.NewDecoder(resp.Body).Decode(&a)
	resp.Body.Close()
	var raw feedbackv1.RawWebhook
	_ = proto.Unmarshal(rec.recs[0].Value, &raw)
	if resp.StatusCode != 202 || !a.Test || !raw.Test || raw.EventId != "u1" || raw.Headers["x-webhook-event"] != "test.webhook" {
		t.Fatalf("%d %+v %v", resp.StatusCode, a, &raw)
	}
}

// deadlineProducer blocks until its context ends and keeps what it saw.
type deadlineProducer struct {
	mu       sync.Mutex
	deadline time.Time
	trace    trace.SpanContext
}

func (p *deadlineProducer) Produce(ctx context.Context, recs ...kafkaio.Record) error {
	p.mu.Lock()
	p.deadline, _ = ctx.Deadline()
	p.trace = trace.SpanContextFromContext(recs[0].Context)
	p.mu.Unlock()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
		return errors.New("the write was not bounded")
	}
}

// The write is bounded by ProduceTimeout (and up to 10 ms more: requests
// share deadlines), not by the provider hanging up, and its record carries
// the request's trace: each request a new one, never one it was sent.
func TestAWriteIsBoundedByTheProduceTimeoutAndCarriesTheRequestsTrace(t *testing.T) {
	pipe, _ := config.ParsePipeline([]byte("sources:\n  - name: delighted\n    provider: delighted\n    secrets: [env:K]\n    ingest_tokens: [env:T]\n"),
		func(k string) (string, bool) { return map[string]string{"K": secret, "T": token}[k], true })
	p := &deadlineProducer{}
	h, err := New(Options{Pipeline: pipe, Producer: p, RawTopic: "raw", ProduceTimeout: 300 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return time.Unix(1763800000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	s := testServer{listen(t, h, ServerOptions{})}
	seen := map[trace.TraceID]bool{}
	for range 3 {
		start := time.Now()
		req, _ := http.NewRequest("POST", s.URL+"/v1/hooks/delighted/"+token, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Delighted-Webhook-Signature", sign(body))
		req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		end := time.Now()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("a write past its timeout: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		p.mu.Lock()
		d, tr := p.deadline, p.trace
		p.mu.Unlock()
		if d.Before(start.Add(300*time.Millisecond)) || d.After(end.Add(310*time.Millisecond)) {
			t.Fatalf("write deadline %v after the request's start, want 300–310 ms", d.Sub(start))
		}
		if !tr.IsValid() || seen[tr.TraceID()] || tr.TraceID().String() == "0af7651916cd43dd8448eb211c80319c" {
			t.Fatalf("the record's trace context %v (valid %v, seen %v)", tr.TraceID(), tr.IsValid(), seen[tr.TraceID()])
		}
		seen[tr.TraceID()] = true
	}
}
