package ingest

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/telemetry"
)

// Traced wraps the public mux in a server span named after the matched
// route ("POST /v1/hooks/{source}/{token}"). It records the method, route
// and status, never the path or query: the path holds the ingest token, and
// a token in a trace store is a leaked token. Every request starts a new
// trace; a traceparent sent from the internet is not trusted. With spans
// dropped (telemetry.SpansDropped) there is no server span: the webhook
// handler starts the request's trace itself.
func Traced(next http.Handler) http.Handler {
	tracer := otel.Tracer("github.com/closedloop/closedloop/services/ingress")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if telemetry.SpansDropped() {
			// No span would be recorded: a new trace id is all it gave, and
			// the handler gives its request one (Handler.ServeHTTP).
			next.ServeHTTP(w, r)
			return
		}
		ctx, span := tracer.Start(r.Context(), "HTTP", newRoot, serverKind)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		r = r.WithContext(ctx)
		next.ServeHTTP(sw, r)
		// Attributes only for a span that records: with no exporter the span
		// exists for its trace id, and building them was allocation for nobody.
		if !span.IsRecording() {
			span.End()
			return
		}
		span.SetAttributes(attribute.String("http.request.method", r.Method))
		span.SetName("HTTP " + r.Method)
		if r.Pattern != "" {
			// "{method} {route}", as the HTTP conventions name a server span;
			// http.route is the route alone.
			span.SetName(r.Pattern)
			route := r.Pattern
			if _, path, ok := strings.Cut(r.Pattern, " "); ok {
				route = path
			}
			span.SetAttributes(attribute.String("http.route", route))
		}
		span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
		if sw.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
		span.End()
	})
}

var (
	newRoot    = trace.WithNewRoot()
	serverKind = trace.WithSpanKind(trace.SpanKindServer)
)

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
