package ingest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/closedloop/closedloop/libs/telemetry"
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

// With no trace exporter no server span is started, but every request still
// gets a trace of its own (logged, and carried in its record's headers),
// never the one a caller sent.
func TestWithSpansDroppedEachRequestGetsANewTraceWithoutASpan(t *testing.T) {
	prev, prevLog := otel.GetTracerProvider(), slog.Default()
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{Service: "t", LogOutput: io.Discard, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = tel.Shutdown(context.Background())
		otel.SetTracerProvider(prev)
		slog.SetDefault(prevLog)
	}()
	seen := map[trace.TraceID]bool{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hooks/{source}/{token}", func(w http.ResponseWriter, r *http.Request) {
		sc := trace.SpanContextFromContext(r.Context())
		if !sc.IsValid() || sc.IsSampled() || seen[sc.TraceID()] || sc.TraceID().String() == "0af7651916cd43dd8448eb211c80319c" {
			t.Errorf("request's span context %v: valid %v, sampled %v, seen %v", sc.TraceID(), sc.IsValid(), sc.IsSampled(), seen[sc.TraceID()])
		}
		if trace.SpanFromContext(r.Context()).IsRecording() {
			t.Error("a span records")
		}
		if _, ok := w.(*httptest.ResponseRecorder); !ok {
			t.Errorf("the writer is wrapped (%T) to give a server span its status", w)
		}
		seen[sc.TraceID()] = true
		w.WriteHeader(http.StatusAccepted)
	})
	for range 3 {
		req := httptest.NewRequest("POST", "/v1/hooks/delighted/tok", nil)
		req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		rec := httptest.NewRecorder()
		Traced(mux).ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("status %d", rec.Code)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("%d traces for 3 requests", len(seen))
	}
}
