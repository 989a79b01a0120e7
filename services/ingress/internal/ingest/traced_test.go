package ingest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/closedloop/closedloop/libs/telemetry/telemetrytest"
)

// handle serves one request built in memory (no connection).
func handle(h *Handler, method, uri string, header map[string]string, body string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	req.SetBodyString(body)
	req.Header.SetContentLength(len(body))
	rc := &fasthttp.RequestCtx{}
	rc.Init(&req, nil, nil)
	h.Handle(rc)
	return rc
}

func TestTheServerSpanIsNamedAfterTheRouteAndNeverHoldsTheToken(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	defer otel.SetTracerProvider(prev)

	h := handler(t, &recorder{})
	rc := handle(h, "POST", "/v1/hooks/delighted/"+token+"?x="+token,
		map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "Content-Type": "application/json", "X-Delighted-Webhook-Signature": sign(body)}, body)
	if rc.Response.StatusCode() != http.StatusAccepted {
		t.Fatalf("status %d: %s", rc.Response.StatusCode(), rc.Response.Body())
	}

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
	attrs := map[string]string{}
	for _, a := range s.Attributes() {
		if strings.Contains(a.Value.Emit(), token) {
			t.Fatalf("attribute %s holds the token", a.Key)
		}
		attrs[string(a.Key)] = a.Value.Emit()
	}
	if attrs["http.response.status_code"] != "202" || attrs["http.route"] != route || attrs["closedloop.source"] != "delighted" {
		t.Fatalf("attributes %v", attrs)
	}
}

// With no trace exporter no server span is started, and the webhook still
// gets a trace of its own, carried in its record.
func TestWithSpansDroppedTheWebhookStillHasATrace(t *testing.T) {
	telemetrytest.DroppingSpans(t)
	rec := &recorder{}
	h := handler(t, rec)
	rc := handle(h, "POST", "/v1/hooks/delighted/"+token, map[string]string{"Content-Type": "application/json", "X-Delighted-Webhook-Signature": sign(body)}, body)
	if rc.Response.StatusCode() != http.StatusAccepted {
		t.Fatalf("status %d", rc.Response.StatusCode())
	}
	if len(rec.recs) != 1 || !traceIDOf(rec.recs[0]).IsValid() {
		t.Fatalf("records %d, or the record carries no trace", len(rec.recs))
	}
}
