// Package ingest is the ingress HTTP handler: it authenticates a webhook
// (source, ingest token, provider signature), bounds what it reads, and
// answers 2xx only once the RawWebhook is acknowledged by all in-sync
// replicas of the raw topic.
package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/services/ingress/internal/verify"
)

// Producer is the part of kafkaio.Producer the handler needs.
type Producer interface {
	Produce(ctx context.Context, recs ...kafkaio.Record) error
}

// Options configure the Handler.
type Options struct {
	Pipeline *config.Pipeline
	Producer Producer
	// RawTopic receives the RawWebhook records.
	RawTopic string
	// MaxBody is the largest body accepted (default 1 MiB); larger gets 413.
	MaxBody int64
	// ProduceTimeout bounds the acks=all write (default 3s, inside the
	// strictest provider's 5 s); past it the answer is 503 + Retry-After.
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
	o        Options
	requests metric.Int64Counter
	bytes    metric.Int64Histogram
}

// New returns the handler.
func New(o Options) *Handler {
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
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
	m := otel.Meter("github.com/closedloop/closedloop/services/ingress")
	h := &Handler{o: o}
	h.requests, _ = m.Int64Counter("closedloop.ingress.requests", metric.WithDescription("Webhook requests by source and outcome."))
	h.bytes, _ = m.Int64Histogram("closedloop.ingress.body.size", metric.WithUnit("By"), metric.WithDescription("Accepted body sizes."))
	return h
}

// Mount registers the routes on mux. Go's mux answers 405 with an Allow
// header for other methods on the same path.
func (h *Handler) Mount(mux *http.ServeMux) {
	mux.Handle("POST /v1/hooks/{source}/{token}", h)
}

type answer struct {
	Status  string `json:"status,omitempty"`
	EventID string `json:"event_id,omitempty"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sourceName := r.PathValue("source")
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("closedloop.source", sourceName))

	src, ok := h.o.Pipeline.Source(sourceName)
	// One answer for an unknown source and a wrong token, so the answer does
	// not tell an attacker which source names exist.
	if !ok || !src.MatchToken(r.PathValue("token")) {
		h.reject(ctx, w, sourceName, http.StatusNotFound, "unknown_source", "no source with that name and ingest token")
		return
	}
	if !jsonMediaType(r.Header.Get("Content-Type")) {
		h.reject(ctx, w, sourceName, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.reject(ctx, w, sourceName, http.StatusRequestEntityTooLarge, "payload_too_large", "body exceeds "+strconv.FormatInt(h.o.MaxBody, 10)+" bytes")
			return
		}
		h.reject(ctx, w, sourceName, http.StatusBadRequest, "unreadable_body", "the request body could not be read")
		return
	}
	scheme, ok := verify.ForProvider(src.Provider)
	if !ok { // configuration validation prevents this; refuse rather than accept unverified
		h.reject(ctx, w, sourceName, http.StatusInternalServerError, "unsupported_provider", "the source's provider has no signature scheme")
		return
	}
	if err := scheme.Verify(verify.Request{Header: r.Header, Body: body, Now: h.o.Now()}, src.Secrets); err != nil {
		var rej *verify.Rejection
		reason := verify.ReasonBadSignature
		if errors.As(err, &rej) {
			reason = rej.Reason
		}
		h.reject(ctx, w, sourceName, http.StatusUnauthorized, reason, "the webhook signature could not be verified")
		return
	}

	eventID, eventType := identify(sourceName, body)
	span.SetAttributes(attribute.String("closedloop.event_id", eventID))
	raw := &feedbackv1.RawWebhook{
		EventId:         eventID,
		Source:          sourceName,
		Provider:        src.Provider,
		EventType:       eventType,
		ReceivedAt:      timestamppb.New(h.o.Now()),
		Body:            body,
		Headers:         keptHeaders(r.Header),
		IngressInstance: h.o.Instance,
	}
	value, err := proto.Marshal(raw)
	if err != nil {
		h.reject(ctx, w, sourceName, http.StatusInternalServerError, "internal", "could not encode the event")
		return
	}
	// The write must not be cut short by the provider hanging up: once it
	// has started, finish it (a retry is then deduplicated downstream).
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.o.ProduceTimeout)
	defer cancel()
	if err := h.o.Producer.Produce(pctx, kafkaio.Record{Topic: h.o.RawTopic, Key: []byte(eventID), Value: value}); err != nil {
		h.o.Log.ErrorContext(ctx, "raw webhook not durable; asking the provider to retry", "source", sourceName, "event_id", eventID, "error", err.Error())
		w.Header().Set("Retry-After", strconv.Itoa(int(h.o.RetryAfter.Seconds())))
		h.write(ctx, w, sourceName, http.StatusServiceUnavailable, answer{Error: "unavailable", Message: "the event could not be stored; retry later"})
		return
	}
	h.bytes.Record(ctx, int64(len(body)), metric.WithAttributes(attribute.String("source", sourceName)))
	h.o.Log.DebugContext(ctx, "webhook accepted", "source", sourceName, "event_id", eventID, "event_type", eventType, "bytes", len(body))
	h.write(ctx, w, sourceName, http.StatusAccepted, answer{Status: "accepted", EventID: eventID})
}

func (h *Handler) reject(ctx context.Context, w http.ResponseWriter, source string, status int, reason, msg string) {
	h.o.Log.InfoContext(ctx, "webhook rejected", "source", source, "status", status, "reason", reason)
	h.write(ctx, w, source, status, answer{Error: reason, Message: msg})
}

func (h *Handler) write(ctx context.Context, w http.ResponseWriter, source string, status int, a answer) {
	outcome := a.Error
	if outcome == "" {
		outcome = a.Status
	}
	h.requests.Add(ctx, 1, metric.WithAttributes(attribute.String("source", source), attribute.String("outcome", outcome), attribute.Int("status", status)))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(a)
}

func jsonMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// identify returns the event's deterministic id and type: the provider's
// event_id and event_type when the body carries them, else the hex SHA-256
// of the source name and body (the same delivery always gets the same id).
func identify(source string, body []byte) (id, typ string) {
	var env struct {
		EventID   string `json:"event_id"`
		EventType string `json:"event_type"`
	}
	if json.Unmarshal(body, &env) == nil && env.EventID != "" {
		return env.EventID, env.EventType
	}
	sum := sha256.New()
	sum.Write([]byte(source))
	sum.Write([]byte{0})
	sum.Write(body)
	return "sha256:" + hex.EncodeToString(sum.Sum(nil)), env.EventType
}

// keptHeaders are the request headers worth keeping with the event.
// Signature headers and credentials are deliberately not in the list.
var keptHeaderNames = []string{"Content-Type", "User-Agent"}

func keptHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(keptHeaderNames))
	for _, n := range keptHeaderNames {
		if v := h.Get(n); v != "" {
			out[strings.ToLower(n)] = v
		}
	}
	return out
}
