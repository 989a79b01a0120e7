package ingest

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/telemetry"
)

// startSpan starts the server span of a webhook request, named after the
// route ("POST /v1/hooks/{source}/{token}"). It records the method, route
// and status, never the path or query: the path holds the ingest token, and
// a token in a trace store is a leaked token. Every request starts a new
// trace; a traceparent sent from the internet is not trusted. With spans
// dropped (telemetry.SpansDropped) there is no server span and the context
// carries no trace: the handler starts the webhook's trace itself.
func (h *Handler) startSpan() (context.Context, trace.Span) {
	if telemetry.SpansDropped() {
		return context.Background(), nil
	}
	return h.tracer.Start(context.Background(), "HTTP", newRoot, serverKind)
}

// endSpan names the span and sets its attributes (only for a span that
// records: with no exporter the span exists for its trace id, and building
// them was allocation for nobody), then ends it.
func (h *Handler) endSpan(span trace.Span, method string, status int) {
	if span == nil {
		return
	}
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetName(method + " " + route) // "{method} {route}", as the HTTP conventions name a server span
	span.SetAttributes(attribute.String("http.request.method", method), attribute.String("http.route", route),
		attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

var (
	newRoot    = trace.WithNewRoot()
	serverKind = trace.WithSpanKind(trace.SpanKindServer)
)
