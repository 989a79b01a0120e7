// Package ingest is the ingress HTTP handler: it authenticates a webhook
// (source, ingest token, provider signature), bounds what it reads, and
// answers 2xx only once the RawWebhook is acknowledged by all in-sync
// replicas of the raw topic.
package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/valyala/fasthttp"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/pbjson"
	"github.com/closedloop/closedloop/libs/telemetry"
	"github.com/closedloop/closedloop/services/ingress/internal/verify"
)

// Producer is the part of kafkaio.Producer the handler needs.
type Producer interface {
	Produce(ctx context.Context, recs ...kafkaio.Record) error
}

// Tokens checks a URL ingest token for a source. StaticTokens uses the
// tokens of the pipeline file; the ingress combines them with the tokens of
// the control topic.
type Tokens interface {
	Match(src *config.Source, token string) bool
}

// StaticTokens matches the tokens declared in the pipeline file.
type StaticTokens struct{}

// Match implements Tokens.
func (StaticTokens) Match(src *config.Source, token string) bool { return src.MatchToken(token) }

// IssuedTokens matches the tokens issued at run time (the control topic),
// by their config.TokenDigest.
type IssuedTokens interface {
	MatchDigest(source string, digest [sha256.Size]byte) bool
}

// AnyTokens accepts a token of the pipeline file or an issued one. Both are
// checked every time, so the time taken does not tell which set holds it;
// the token is hashed once for both.
type AnyTokens struct{ Issued IssuedTokens }

// Match implements Tokens.
func (a AnyTokens) Match(src *config.Source, token string) bool {
	d := config.TokenDigest(token)
	static := src.MatchDigest(d)
	issued := a.Issued.MatchDigest(src.Name, d)
	return static || issued
}

// Options configure the Handler.
type Options struct {
	Pipeline *config.Pipeline
	Producer Producer
	// Tokens checks ingest tokens (default StaticTokens).
	Tokens Tokens
	// RawTopic receives the RawWebhook records.
	RawTopic string
	// MaxBody is the largest body accepted (default 1 MiB); larger gets 413.
	// The ingress computes it from the raw topic's max.message.bytes; a body
	// whose record still does not fit gets 413 too.
	MaxBody int64
	// MaxInFlight bounds the requests being handled at once (default 1024);
	// past it the answer is 503 + Retry-After instead of unbounded memory.
	MaxInFlight int
	// SourceMaxInFlight bounds one source's requests at once (default 256);
	// past it that source gets 429 + Retry-After and the others are unaffected.
	SourceMaxInFlight int
	// MaxBodyMemory bounds the bytes of bodies held at once, counting each
	// body twice (the body and its encoded record; default 64 MiB); past it
	// the answer is 503 + Retry-After. Body memory is taken as bytes arrive.
	MaxBodyMemory int64
	// SourceMaxBodyMemory is one source's share of it (default 16 MiB);
	// past it that source gets 429 + Retry-After.
	SourceMaxBodyMemory int64
	// UnverifiedPerSecond and UnverifiedBurst bound the requests per source
	// that fail signature verification (default 5/s, burst 20). They never
	// spend the source's rate limit; past this one they get 429 instead of
	// 401 and are not logged one by one.
	UnverifiedPerSecond float64
	UnverifiedBurst     int
	// ProduceTimeout bounds the acks=all write (default 3s, inside the
	// strictest provider's 5 s); past it the answer is 503 + Retry-After.
	// Requests starting within 10 ms share a deadline, so a write may run
	// up to 10 ms longer.
	ProduceTimeout time.Duration
	// RetryAfter is the Retry-After value sent with 503 (default 5s).
	RetryAfter time.Duration
	// Instance names this ingress replica in RawWebhook.ingress_instance.
	Instance string
	Log      *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Handler serves POST /v1/hooks/{source}/{token}.
type Handler struct {
	o          Options
	sources    atomic.Pointer[Sources]
	limiters   limiters
	unverified limiters
	budget     *budget
	deadlines  deadlines
	logs       sampler
	opts       options
	traffic    trafficCounts
	requests   metric.Int64Counter
	duration   metric.Float64Histogram
	bytes      metric.Int64Histogram
	tracer     trace.Tracer
}

// New returns the handler serving the pipeline's sources.
func New(o Options) (*Handler, error) {
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 1024
	}
	if o.SourceMaxInFlight <= 0 {
		o.SourceMaxInFlight = min(256, o.MaxInFlight)
	}
	if o.MaxBodyMemory <= 0 {
		o.MaxBodyMemory = 64 << 20
	}
	if o.SourceMaxBodyMemory <= 0 {
		o.SourceMaxBodyMemory = min(16<<20, o.MaxBodyMemory)
	}
	if o.UnverifiedPerSecond <= 0 {
		o.UnverifiedPerSecond = 5
	}
	if o.UnverifiedBurst <= 0 {
		o.UnverifiedBurst = 20
	}
	if o.ProduceTimeout <= 0 {
		o.ProduceTimeout = 3 * time.Second
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tokens == nil {
		o.Tokens = StaticTokens{}
	}
	m := otel.Meter("github.com/closedloop/closedloop/services/ingress")
	h := &Handler{o: o, budget: newBudget(o.MaxInFlight, o.SourceMaxInFlight, o.MaxBodyMemory, o.SourceMaxBodyMemory),
		deadlines: deadlines{timeout: o.ProduceTimeout}, tracer: otel.Tracer("github.com/closedloop/closedloop/services/ingress")}
	h.requests, _ = m.Int64Counter("closedloop.ingress.requests", metric.WithUnit("{request}"), metric.WithDescription("Webhook requests by source and outcome."))
	h.bytes, _ = m.Int64Histogram("closedloop.ingress.body.size", metric.WithUnit("By"), metric.WithDescription("Accepted body sizes."),
		metric.WithExplicitBucketBoundaries(telemetry.Bytes...))
	h.duration, _ = m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of webhook requests, by source, method and status (OpenTelemetry HTTP semantic conventions)."),
		metric.WithExplicitBucketBoundaries(telemetry.FastSeconds...))
	_, _ = m.Int64ObservableGauge("closedloop.ingress.inflight", metric.WithUnit("{request}"), metric.WithDescription("Requests being handled."),
		metric.WithInt64Callback(func(_ context.Context, ob metric.Int64Observer) error {
			n, _ := h.budget.inFlight()
			ob.Observe(int64(n))
			return nil
		}))
	_, _ = m.Int64ObservableGauge("closedloop.ingress.body.memory", metric.WithUnit("By"), metric.WithDescription("Bytes of body memory held by the requests being handled (each body counted twice: body and record)."),
		metric.WithInt64Callback(func(_ context.Context, ob metric.Int64Observer) error {
			_, b := h.budget.inFlight()
			ob.Observe(b)
			return nil
		}))
	if err := h.Reload(o.Pipeline); err != nil {
		return nil, err
	}
	return h, nil
}

// Reload swaps in the sources of a new pipeline; requests in flight finish
// with the sources they started with.
func (h *Handler) Reload(p *config.Pipeline) error {
	s, err := h.NewSources(p)
	if err != nil {
		return err
	}
	h.sources.Store(s)
	return nil
}

type answer struct {
	Status  string `json:"status,omitempty"`
	EventID string `json:"event_id,omitempty"`
	Test    bool   `json:"test,omitempty"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// serve handles a webhook posted to source with token. The order is the
// cheapest refusal first: the source and its token, the media type and
// declared size, the request and memory budgets (the source's share, then
// the total), the body (taken as it arrives), the signature, and only for
// an authentic webhook the source's rate limit; then the write to Kafka.
func (h *Handler) serve(ctx context.Context, w *fasthttp.RequestCtx, sourceName, token string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		// No server span (spans dropped: telemetry.SpansDropped): the
		// webhook gets a trace of its own, logged and carried in its record.
		ctx = telemetry.NewTrace(ctx)
	}
	span := trace.SpanFromContext(ctx)
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(attribute.String("closedloop.source", sourceName))
	}

	src, ok := h.sources.Load().byName[sourceName]
	// One answer for an unknown source and a wrong token, so the answer does
	// not tell an attacker which source names exist.
	if !ok || !h.o.Tokens.Match(src.cfg, token) {
		h.reject(ctx, w, "", http.StatusNotFound, "unknown_source", "no source with that name and ingest token")
		return
	}
	if !jsonMediaType(w.Request.Header.ContentType()) {
		h.reject(ctx, w, sourceName, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
		return
	}
	if int64(w.Request.Header.ContentLength()) > h.o.MaxBody {
		h.tooLarge(ctx, w, sourceName)
		return
	}
	if v := h.budget.enter(sourceName); v != granted {
		h.overloaded(ctx, w, sourceName, v, "requests")
		return
	}
	var held int64
	defer func() { h.budget.leave(sourceName, held) }()
	body, err := h.readBody(w, sourceName, &held)
	// The record copies the body: the buffer is free once the handler ends.
	defer putBuffer(body)
	if err != nil {
		var full budgetError
		switch {
		case errors.Is(err, errBodyTooLarge):
			h.tooLarge(ctx, w, sourceName)
		case errors.As(err, &full):
			h.overloaded(ctx, w, sourceName, full.v, "memory")
		default:
			h.reject(ctx, w, sourceName, http.StatusBadRequest, "unreadable_body", "the request body could not be read")
		}
		return
	}
	headers := requestHeader(&w.Request.Header, src.reads)
	defer headers.release() // the record copies them (appendProto), and nothing else keeps the map
	header := headers.h
	vreq := verify.Request{Header: header, Body: body, Now: h.o.Now()}
	if err := src.provider.Scheme.Verify(vreq, src.cfg.Secrets); err != nil {
		var rej *verify.Rejection
		reason := verify.ReasonBadSignature
		if errors.As(err, &rej) {
			reason = rej.Reason
		} else {
			h.o.Log.ErrorContext(ctx, "signature check failed", "source", sourceName, "error", err.Error())
		}
		// Failures have their own, smaller budget: they never spend the
		// source's rate limit, and a flood of them is answered 429.
		if !src.unverified.Allow() {
			w.Response.Header.Set("Retry-After", retryAfter(h.o.UnverifiedPerSecond))
			h.reject(ctx, w, sourceName, http.StatusTooManyRequests, "unverified_rate_limited", "too many requests that fail verification; retry later")
			return
		}
		h.reject(ctx, w, sourceName, http.StatusUnauthorized, reason, "the webhook signature could not be verified")
		return
	}
	if !src.limiter.Allow() {
		w.Response.Header.Set("Retry-After", retryAfter(src.cfg.RateLimit.PerSecond))
		h.reject(ctx, w, sourceName, http.StatusTooManyRequests, "rate_limited", "the source's rate limit is exceeded; retry later")
		return
	}

	id := src.provider.Identify(sourceName, vreq)
	if recording {
		span.SetAttributes(attribute.String("closedloop.event_id", id.EventID))
	}
	raw := rawRecord{
		eventID: id.EventID, source: sourceName, provider: src.cfg.Provider, eventType: id.EventType,
		received: vreq.Now, body: body, header: header, kept: src.kept, test: id.Test, instance: h.o.Instance,
	}
	value := raw.appendProto(getBuffer(raw.size()))
	// The write must not be cut short by the provider hanging up: once it
	// has started, finish it (a retry is then deduplicated downstream). It
	// is bounded by ProduceTimeout alone; the request's trace context goes
	// with the record.
	rec := kafkaio.Record{Topic: h.o.RawTopic, Key: []byte(id.EventID), Value: value, Context: ctx}
	step := h.deadlines.after()
	err = h.o.Producer.Produce(step.ctx, rec)
	step.release() // the producer is done with the context once it returns
	if err != nil {
		if errors.Is(err, kafkaio.ErrRecordTooLarge) {
			// Cannot be stored, ever: a retry would fail the same way.
			h.tooLarge(ctx, w, sourceName)
			return
		}
		h.o.Log.ErrorContext(ctx, "raw webhook not durable; asking the provider to retry", "source", sourceName, "event_id", id.EventID, "error", err.Error())
		w.Response.Header.Set("Retry-After", strconv.Itoa(int(h.o.RetryAfter.Seconds())))
		h.write(ctx, w, sourceName, http.StatusServiceUnavailable, answer{Error: "unavailable", Message: "the event could not be stored; retry later"})
		return
	}
	// Acknowledged: the batcher and kafka-go are done with the record (after
	// an error or a timeout they may not be, and it is left to the collector).
	putBuffer(value)
	h.bytes.Record(ctx, int64(len(body)), h.opts.bytes(sourceName))
	if h.o.Log.Enabled(ctx, slog.LevelDebug) { // its arguments alone were 5 allocations per request
		h.o.Log.DebugContext(ctx, "webhook accepted", "source", sourceName, "event_id", id.EventID, "event_type", id.EventType, "bytes", len(body), "test", id.Test)
	}
	h.write(ctx, w, sourceName, http.StatusAccepted, answer{Status: "accepted", EventID: id.EventID, Test: id.Test})
}

func (h *Handler) tooLarge(ctx context.Context, w *fasthttp.RequestCtx, source string) {
	h.reject(ctx, w, source, http.StatusRequestEntityTooLarge, "payload_too_large", "body exceeds "+strconv.FormatInt(h.o.MaxBody, 10)+" bytes, the most the raw topic can store")
}

// overloaded answers a request over a budget: 429 when its source is over
// its own share (the others are unaffected), 503 when the ingress is full.
func (h *Handler) overloaded(ctx context.Context, w *fasthttp.RequestCtx, source string, v verdict, what string) {
	w.Response.Header.Set("Retry-After", strconv.Itoa(int(h.o.RetryAfter.Seconds())))
	if v == sourceFull {
		h.reject(ctx, w, source, http.StatusTooManyRequests, "source_overloaded", "this source has too many "+what+" in flight; retry later")
		return
	}
	h.reject(ctx, w, source, http.StatusServiceUnavailable, "overloaded", "too many "+what+" in flight; retry later")
}

// budgetError is a body refused for the memory budget.
type budgetError struct{ v verdict }

func (budgetError) Error() string { return "body memory budget exhausted" }

// errBodyTooLarge is a body longer than MaxBody.
var errBodyTooLarge = errors.New("body too large")

// limited reads at most n bytes from r; a body longer than that is
// errBodyTooLarge.
type limited struct {
	r io.Reader
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errBodyTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// bodyOf is the request's body as it arrives: the server streams it (at
// most 8 KiB read ahead of the handler); a request built without the
// server (tests, fuzzing) has it whole.
func bodyOf(w *fasthttp.RequestCtx) io.Reader {
	if s := w.RequestBodyStream(); s != nil {
		return s
	}
	return bytes.NewReader(w.Request.Body())
}

// chunk is the most body memory taken at once when the length is unknown,
// and the most allocated up front when it is known.
const chunk = 64 << 10

// readBody reads at most MaxBody bytes as they arrive, charging the memory
// budget (twice the bytes: the body, then its encoded record) before it
// holds them: up front for a declared length (so a slow sender holds no more
// than it declared, and an over-budget one is refused before it sends),
// chunk by chunk otherwise. The buffer grows with what arrived, never from
// the declared length alone. *held is what was charged, for the caller to
// give back.
func (h *Handler) readBody(w *fasthttp.RequestCtx, source string, held *int64) ([]byte, error) {
	charge := func(n int64) error {
		if v := h.budget.grow(source, 2*n); v != granted {
			return budgetError{v}
		}
		*held += 2 * n
		return nil
	}
	want := int64(w.Request.Header.ContentLength()) // -1 when chunked
	// A declared length is at most MaxBody (serve) and the stream ends
	// there; an unknown one is bounded here.
	var rd io.Reader = &limited{r: bodyOf(w), n: h.o.MaxBody}
	if want > 0 {
		if err := charge(want); err != nil {
			return nil, err
		}
	}
	var buf []byte
	if want > 0 && want <= int64(bufferClasses[len(bufferClasses)-1]) {
		// A reused buffer: at most 64 KiB ahead of what arrived, and the
		// declared length is charged already.
		buf = getBuffer(int(want))
	}
	for {
		if want > 0 && int64(len(buf)) == want {
			// Anything past the declared length is a malformed request
			// (read into the buffer's spare room, if it has any).
			probe := buf[len(buf):cap(buf)]
			if len(probe) == 0 {
				probe = make([]byte, 1)
			}
			if n, _ := rd.Read(probe[:1]); n > 0 {
				return nil, errors.New("body longer than Content-Length")
			}
			return buf, nil
		}
		if len(buf) == cap(buf) {
			grow := int64(min(max(cap(buf), 4096), chunk))
			if want > 0 {
				grow = min(grow, want-int64(len(buf)))
			} else if err := charge(grow); err != nil {
				return nil, err
			}
			buf = slices.Grow(buf, int(grow))
		}
		end := cap(buf)
		if want > 0 {
			end = int(min(int64(end), want))
		}
		n, err := rd.Read(buf[len(buf):end])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			if want > 0 && int64(len(buf)) != want {
				return nil, io.ErrUnexpectedEOF
			}
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func (h *Handler) reject(ctx context.Context, w *fasthttp.RequestCtx, source string, status int, reason, msg string) {
	// Every rejection is counted (closedloop.ingress.requests); the log has
	// at most one line per source and reason every logEvery, with the count
	// of the ones it left out, so a flood cannot flood the logs.
	if suppressed, ok := h.logs.allow(source, reason, h.o.Now()); ok {
		h.o.Log.InfoContext(ctx, "webhook rejected", "source", source, "status", status, "reason", reason, "suppressed_since_last", suppressed)
	} else {
		h.o.Log.DebugContext(ctx, "webhook rejected", "source", source, "status", status, "reason", reason)
	}
	h.write(ctx, w, source, status, answer{Error: reason, Message: msg})
}

func (h *Handler) write(ctx context.Context, w *fasthttp.RequestCtx, source string, status int, a answer) {
	outcome := a.Error
	if outcome == "" {
		outcome = a.Status
	}
	// Unknown sources are counted under "" so that scanners cannot create
	// unbounded label values.
	h.requests.Add(ctx, 1, h.opts.requests(source, outcome, status))
	h.traffic.count(source, status)
	w.SetStatusCode(status)
	w.Response.Header.SetContentTypeBytes(jsonContentType)
	w.Response.Header.SetBytesV("Cache-Control", noStore)
	b := a.appendJSON(getBuffer(0))
	w.SetBody(b) // copied
	putBuffer(b)
}

var (
	jsonContentType = []byte("application/json")
	noStore         = []byte("no-store")
)

// traffic counts one source's requests by class of answer, for GetStatus
// (closedloopctl top computes webhooks/s from it).
type traffic struct{ accepted, rejected, failed atomic.Int64 }

// trafficCounts holds every source's traffic since start (across reloads).
// Source names are bounded: unknown sources are counted under "".
type trafficCounts struct {
	mu sync.RWMutex
	m  map[string]*traffic
}

func (c *trafficCounts) count(source string, status int) {
	c.mu.RLock()
	t := c.m[source]
	c.mu.RUnlock()
	if t == nil {
		c.mu.Lock()
		if c.m == nil {
			c.m = map[string]*traffic{}
		}
		if t = c.m[source]; t == nil {
			t = &traffic{}
			c.m[source] = t
		}
		c.mu.Unlock()
	}
	switch {
	case status < 300:
		t.accepted.Add(1)
	case status < 500:
		t.rejected.Add(1)
	default:
		t.failed.Add(1)
	}
}

// Traffic lists the requests per source since start, sorted by source.
func (h *Handler) Traffic() []*adminv1.SourceTraffic {
	h.traffic.mu.RLock()
	defer h.traffic.mu.RUnlock()
	out := make([]*adminv1.SourceTraffic, 0, len(h.traffic.m))
	for k, t := range h.traffic.m {
		out = append(out, &adminv1.SourceTraffic{Source: k, Accepted: t.accepted.Load(), Rejected: t.rejected.Load(), Failed: t.failed.Load()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

type attrKey struct {
	source, outcome string
	status          int
}

// options caches the measurement options of each label combination: building
// an attribute set per request (a sort and several allocations) was a
// measurable share of the ingress's CPU. Every label value is bounded (the
// configured sources, "" or "unknown", the outcomes, the status codes), so
// the caches are too.
type options struct {
	mu        sync.RWMutex
	reqs      map[attrKey]metric.AddOption
	durations map[attrKey]metric.RecordOption // outcome holds the method
	sizes     map[string]metric.RecordOption
}

func cached[K comparable, V any](mu *sync.RWMutex, m *map[K]V, k K, make func() V) V {
	mu.RLock()
	v, ok := (*m)[k]
	mu.RUnlock()
	if ok {
		return v
	}
	v = make()
	mu.Lock()
	if *m == nil {
		*m = map[K]V{}
	}
	(*m)[k] = v
	mu.Unlock()
	return v
}

func (o *options) requests(source, outcome string, status int) metric.AddOption {
	return cached(&o.mu, &o.reqs, attrKey{source, outcome, status}, func() metric.AddOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("source", source), attribute.String("outcome", outcome), attribute.Int("status", status)))
	})
}

func (o *options) duration(source, method string, status int) metric.RecordOption {
	return cached(&o.mu, &o.durations, attrKey{source, method, status}, func() metric.RecordOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("closedloop.source", source),
			attribute.String("http.request.method", method), attribute.Int("http.response.status_code", status)))
	})
}

func (o *options) bytes(source string) metric.RecordOption {
	return cached(&o.mu, &o.sizes, source, func() metric.RecordOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("source", source)))
	})
}

// appendJSON writes the answer as a JSON object with a trailing newline.
func (a answer) appendJSON(b []byte) []byte {
	b = append(b, '{')
	first := true
	field := func(name, v string) {
		if v == "" {
			return
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = appendJSONString(b, v)
	}
	field("status", a.Status)
	field("event_id", a.EventID)
	if a.Test {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `"test":true`...)
	}
	field("error", a.Error)
	field("message", a.Message)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it (quotes, backslashes, control characters, the HTML-sensitive
// <, > and &, U+2028 and U+2029; invalid UTF-8 becomes U+FFFD), without
// allocating.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = pbjson.AppendEscaped(append(b, s[start:i]...), c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func jsonMediaType(ct []byte) bool {
	if string(ct) == "application/json" {
		return true // what every provider sends; ParseMediaType allocates
	}
	mt, _, err := mime.ParseMediaType(string(ct))
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// baseHeaders are kept for every provider. Signature headers and
// credentials are deliberately never kept.
var baseHeaders = []string{"Content-Type", "User-Agent"}

// maxKeptHeader bounds each kept header's value: they are informational, and
// the record's size must stay close to the body's.
const maxKeptHeader = 256

// logEvery is how often a rejection of one source and reason is logged.
const logEvery = 10 * time.Second

// sampler lets one log line per key through every logEvery.
type sampler struct {
	mu sync.Mutex
	m  map[[2]string]*sampled
}

type sampled struct {
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many were left out since the
// last line. Keys are bounded: unknown sources are logged under "".
func (s *sampler) allow(source, reason string, now time.Time) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[[2]string]*sampled{}
	}
	k := [2]string{source, reason}
	e := s.m[k]
	if e == nil {
		if len(s.m) > 10_000 {
			clear(s.m)
		}
		e = &sampled{}
		s.m[k] = e
	}
	if !e.last.IsZero() && now.Sub(e.last) < logEvery {
		e.suppressed++
		return 0, false
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return n, true
}
