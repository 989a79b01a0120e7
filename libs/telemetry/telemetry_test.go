package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestLogLinesCarryTheTraceIDOfTheirContext(t *testing.T) {
	var buf bytes.Buffer
	tel, err := Setup(context.Background(), Options{Service: "test", LogOutput: &buf})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	ctx, span := tel.Tracer("t").Start(context.Background(), "op")
	tel.Logger.InfoContext(ctx, "inside")
	span.End()
	tel.Logger.Info("outside")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d log lines", len(lines))
	}
	var in, out map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &in)
	_ = json.Unmarshal([]byte(lines[1]), &out)
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["service"] != "test" {
		t.Fatalf("line inside the span = %v", in)
	}
	if _, ok := out["trace_id"]; ok {
		t.Fatalf("line without a span has a trace id: %v", out)
	}
}

func TestMetricsAreServedInPrometheusFormat(t *testing.T) {
	tel, err := Setup(context.Background(), Options{Service: "test", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	c, _ := tel.Meter("t").Int64Counter("closedloop.test.things")
	c.Add(context.Background(), 3)
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !regexp.MustCompile(`closedloop_test_things_total(\{[^}]*\})? 3`).MatchString(rec.Body.String()) {
		t.Fatalf("counter missing from /metrics:\n%s", rec.Body.String())
	}
}

func TestAnUnknownLogLevelIsRefused(t *testing.T) {
	if _, err := Setup(context.Background(), Options{Service: "t", LogLevel: "loud", LogOutput: io.Discard}); err == nil {
		t.Fatal("want an error")
	}
}
