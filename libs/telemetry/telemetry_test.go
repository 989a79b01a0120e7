package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	gproto "google.golang.org/protobuf/proto"
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

// otlpReceiver collects exported spans as "service.name/span name" and the
// resource attributes it saw.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []string
	attrs map[string]string
}

func (o *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	o.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (o *otlpReceiver) add(req *coltracepb.ExportTraceServiceRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.attrs == nil {
		o.attrs = map[string]string{}
	}
	for _, rs := range req.ResourceSpans {
		for _, a := range rs.GetResource().GetAttributes() {
			o.attrs[a.Key] = a.GetValue().GetStringValue()
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				o.spans = append(o.spans, o.attrs["service.name"]+"/"+sp.Name)
			}
		}
	}
}

func (o *otlpReceiver) got() ([]string, map[string]string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.spans...), maps.Clone(o.attrs)
}

// Both OTLP protocols are honoured, chosen by OTEL_EXPORTER_OTLP_PROTOCOL,
// and OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the exported
// resource (and the log lines).
func TestTracesGoOutOverEitherOTLPProtocolUnderTheConfiguredServiceName(t *testing.T) {
	for _, proto := range []string{"grpc", "http/protobuf"} {
		t.Run(strings.ReplaceAll(proto, "/", "-"), func(t *testing.T) {
			rcv := &otlpReceiver{}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if proto == "grpc" {
				srv := grpc.NewServer()
				coltracepb.RegisterTraceServiceServer(srv, rcv)
				go func() { _ = srv.Serve(lis) }()
				defer srv.Stop()
			} else {
				srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					var req coltracepb.ExportTraceServiceRequest
					if r.URL.Path != "/v1/traces" || gproto.Unmarshal(b, &req) != nil {
						http.Error(w, "bad export", http.StatusBadRequest)
						return
					}
					rcv.add(&req)
					w.Header().Set("Content-Type", "application/x-protobuf")
				})}
				go func() { _ = srv.Serve(lis) }()
				defer srv.Close()
			}
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", proto)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())
			t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
			t.Setenv("OTEL_SERVICE_NAME", "feedback-ingress-eu")
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
			t.Setenv("OTEL_METRICS_EXPORTER", "none")
			var logs bytes.Buffer
			tel, err := Setup(context.Background(), Options{Service: "ingress", Version: "1.2.3", LogOutput: &logs})
			if err != nil {
				t.Fatal(err)
			}
			_, span := tel.Tracer("t").Start(context.Background(), "op")
			span.End()
			tel.Logger.Info("hello")
			if err := tel.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			spans, attrs := rcv.got()
			if !slices.Equal(spans, []string{"feedback-ingress-eu/op"}) {
				t.Fatalf("spans received over %s: %v", proto, spans)
			}
			if attrs["deployment.environment.name"] != "staging" || attrs["service.version"] != "1.2.3" {
				t.Fatalf("resource: %v", attrs)
			}
			if !strings.Contains(logs.String(), `"service":"feedback-ingress-eu"`) {
				t.Fatalf("log line: %s", logs.String())
			}
		})
	}
}

func TestWithoutAnExporterSpansAreNotRecordedButHaveIDs(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	tel, err := Setup(context.Background(), Options{Service: "t", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	_, span := tel.Tracer("t").Start(context.Background(), "op")
	if span.IsRecording() || !span.SpanContext().TraceID().IsValid() {
		t.Fatalf("recording %v, trace id %v", span.IsRecording(), span.SpanContext().TraceID())
	}
	if tel.ServiceName != "t" {
		t.Fatalf("service name %q", tel.ServiceName)
	}
}

func TestTheExporterSwitches(t *testing.T) {
	for _, c := range []struct {
		env          map[string]string
		traces, push bool
	}{
		{map[string]string{}, false, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, true, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318"}, true, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "prometheus"}, false, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "otlp"}, true, true},
	} {
		get := func(k string) string { return c.env[k] }
		if exportTraces(get) != c.traces || pushMetrics(get) != c.push {
			t.Errorf("%v: traces %v push %v, want %v %v", c.env, exportTraces(get), pushMetrics(get), c.traces, c.push)
		}
	}
}

func TestFreshnessIsRecordedPerStageAndDestinationAndKeptAsTheLatest(t *testing.T) {
	tel, err := Setup(context.Background(), Options{Service: "t", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	f := NewFreshness(tel.Meter("t"), "sink-test")
	now := time.Now()
	f.Record(context.Background(), now.Add(-2*time.Second), "warehouse")
	f.Record(context.Background(), now.Add(-300*time.Millisecond), "warehouse")
	f.Record(context.Background(), time.Time{}, "warehouse") // unknown receipt: not recorded
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !regexp.MustCompile(`closedloop_freshness_seconds_count\{[^}]*destination="warehouse"[^}]*stage="sink-test"[^}]*\} 2`).MatchString(rec.Body.String()) {
		t.Fatalf("freshness histogram:\n%s", rec.Body.String())
	}
	var got *FreshnessSample
	for _, s := range LatestFreshness() {
		if s.Stage == "sink-test" {
			got = &s
		}
	}
	if got == nil || got.Destination != "warehouse" || got.Seconds < 0.2 || got.Seconds > 1 {
		t.Fatalf("latest: %+v", got)
	}
	if n := testing.AllocsPerRun(100, func() { f.Record(context.Background(), now, "warehouse") }); n > 1 {
		t.Errorf("%.0f allocations per Record", n)
	}
}

func TestSpansAreDroppedOnlyWhileTheNeverSamplingProviderIsTheGlobalOne(t *testing.T) {
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	exporting, err := Setup(context.Background(), Options{Service: "t", LogOutput: io.Discard,
		Getenv: func(k string) string { return map[string]string{"OTEL_TRACES_EXPORTER": "console"}[k] }})
	if err != nil {
		t.Fatal(err)
	}
	if SpansDropped() {
		t.Error("spans dropped with a trace exporter")
	}
	_ = exporting.Shutdown(context.Background())

	tel, err := Setup(context.Background(), Options{Service: "t", LogOutput: io.Discard, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	if !SpansDropped() {
		t.Error("spans recorded without a trace exporter")
	}
	otel.SetTracerProvider(sdktrace.NewTracerProvider()) // e.g. a test's recorder
	if SpansDropped() {
		t.Error("spans dropped under another provider")
	}
	otel.SetTracerProvider(tel.TracerProvider)
	_ = tel.Shutdown(context.Background())
	if SpansDropped() {
		t.Error("spans dropped after Shutdown")
	}
}

func TestNewTraceGivesEachCallItsOwnUnsampledTrace(t *testing.T) {
	seen := map[trace.TraceID]bool{}
	for range 1000 {
		sc := trace.SpanContextFromContext(NewTrace(context.Background()))
		if !sc.IsValid() || sc.IsSampled() || sc.IsRemote() || seen[sc.TraceID()] {
			t.Fatalf("span context %+v (valid %v, sampled %v, seen %v)", sc, sc.IsValid(), sc.IsSampled(), seen[sc.TraceID()])
		}
		seen[sc.TraceID()] = true
	}
}
