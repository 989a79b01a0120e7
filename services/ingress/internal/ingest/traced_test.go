package ingest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/closedloop/closedloop/libs/telemetry/telemetrytest"
)

func TestTheServerSpanIsNamedAfterTheRouteAndNeverHoldsTheToken(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	defer otel.SetTracerProvider(prev)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hooks/{source}/{token}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	req := httptest.NewRequest("POST", "/v1/hooks/delighted/tok_very_secret?x=tok_very_secret", nil)
	req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	Traced(mux).ServeHTTP(httptest.NewRecorder(), req)

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.Name() != "POST /v1/hooks/{source}/{token}" {
		t.Fatalf("span name %q", s.Name())
	}
	if s.SpanContext().TraceID().String() == "0af7651916cd43dd8448eb211c80319c" {
		t.Fatal("a traceparent from the internet was trusted")
	}
	for _, a := range s.Attributes() {
		if strings.Contains(a.Value.Emit(), "tok_very_secret") {
			t.Fatalf("attribute %s holds the token", a.Key)
		}
	}
}

// With no trace exporter no server span is started: the request goes to
// the mux as it came (the webhook handler starts its trace).
func TestWithSpansDroppedTheRequestPassesUnwrapped(t *testing.T) {
	telemetrytest.DroppingSpans(t)
	req := httptest.NewRequest("POST", "/v1/hooks/delighted/tok", nil)
	rec := httptest.NewRecorder()
	Traced(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r != req || w != rec {
			t.Errorf("request or writer wrapped (%T) for a span nobody records", w)
		}
		w.WriteHeader(http.StatusAccepted)
	})).ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d", rec.Code)
	}
}
