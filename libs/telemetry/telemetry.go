// Package telemetry sets up a service's logs, traces and metrics:
//
//   - log/slog JSON on stderr, with trace_id and span_id on every line logged
//     with a context that carries a span;
//   - an OpenTelemetry TracerProvider (always real, so trace ids exist and
//     propagate) whose exporter is chosen by the SDK's environment variables
//     through autoexport: OTEL_TRACES_EXPORTER (otlp, console, none),
//     OTEL_EXPORTER_OTLP_PROTOCOL or OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
//     (http/protobuf, the default, or grpc), OTEL_EXPORTER_OTLP_ENDPOINT and
//     the rest. Traces are exported when OTEL_TRACES_EXPORTER names an
//     exporter or an OTLP endpoint is set; otherwise spans are not recorded
//     (ids only);
//   - a MeterProvider with a Prometheus exporter (served by MetricsHandler)
//     and, when OTEL_METRICS_EXPORTER names one (otlp, console) or an OTLP
//     endpoint is set, a pushing exporter too;
//   - the resource from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over
//     the service's own name, version and instance;
//   - W3C trace context and baggage as the global propagator.
package telemetry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Options describe the service being instrumented.
type Options struct {
	// Service is the service.name resource attribute and the "service" log field.
	Service string
	// Version is the service.version resource attribute.
	Version string
	// Instance is service.instance.id (default: the host name).
	Instance string
	// LogLevel is debug, info (default), warn or error.
	LogLevel string
	// LogOutput is where logs go (default os.Stderr).
	LogOutput io.Writer
	// Getenv reads the OTEL_* variables that decide which exporters run
	// (default os.Getenv; the exporters themselves read the environment).
	Getenv func(string) string
}

// Telemetry holds the providers of one service.
type Telemetry struct {
	// ServiceName is service.name as exported: OTEL_SERVICE_NAME (or
	// service.name in OTEL_RESOURCE_ATTRIBUTES) when set, else Options.Service.
	ServiceName    string
	Logger         *slog.Logger
	TracerProvider *sdktrace.TracerProvider
	MeterProvider  *sdkmetric.MeterProvider
	registry       *prometheus.Registry
}

// Setup builds the providers and installs them as the OTel globals (which
// otelgrpc, otelhttp and the kafkaio package use by default).
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	if o.Instance == "" {
		o.Instance, _ = os.Hostname()
	}
	if o.LogOutput == nil {
		o.LogOutput = os.Stderr
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(orDefault(o.LogLevel, "info")))); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", o.LogLevel)
	}

	// The service's own attributes first, then the environment's, which win:
	// OTEL_SERVICE_NAME renames a service for the trace store.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			attribute.String("service.name", o.Service),
			attribute.String("service.version", o.Version),
			attribute.String("service.instance.id", o.Instance),
		),
		resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME): %w", err)
	}
	name := o.Service
	if v, ok := res.Set().Value("service.name"); ok && v.AsString() != "" {
		name = v.AsString()
	}
	logger := slog.New(NewTraceHandler(slog.NewJSONHandler(o.LogOutput, &slog.HandlerOptions{Level: level}))).
		With("service", name)
	slog.SetDefault(logger)

	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	if exportTraces(o.Getenv) {
		te, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("trace exporter (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*): %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(te))
	} else {
		// No exporter: spans are not recorded (recording them for nobody
		// costs ~15 % of the normalizer's CPU), but they still exist, so
		// trace ids are created, logged and propagated in record headers.
		// They are marked not sampled, so export from every service of a
		// pipeline or from none.
		tpOpts = append(tpOpts, sdktrace.WithSampler(sdktrace.NeverSample()))
	}
	if pushMetrics(o.Getenv) {
		mr, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, fmt.Errorf("metric exporter (OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_*): %w", err)
		}
		mpOpts = append(mpOpts, sdkmetric.WithReader(mr))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pe, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mpOpts = append(mpOpts, sdkmetric.WithReader(pe))

	tp := sdktrace.NewTracerProvider(tpOpts...)
	t := &Telemetry{
		ServiceName:    name,
		Logger:         logger,
		TracerProvider: tp,
		MeterProvider:  sdkmetric.NewMeterProvider(mpOpts...),
		registry:       reg,
	}
	otel.SetTracerProvider(t.TracerProvider)
	if !exportTraces(o.Getenv) {
		dropping.Store(tp)
	}
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { logger.Warn("opentelemetry", "error", err.Error()) }))
	return t, nil
}

// Meter returns a meter of this service's MeterProvider.
func (t *Telemetry) Meter(name string) metric.Meter { return t.MeterProvider.Meter(name) }

// Tracer returns a tracer of this service's TracerProvider.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.TracerProvider.Tracer(name) }

// MetricsHandler serves the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the exporters. Run it as the last shutdown step.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	dropping.CompareAndSwap(t.TracerProvider, nil)
	return errors.Join(t.TracerProvider.Shutdown(ctx), t.MeterProvider.Shutdown(ctx))
}

// exportTraces: OTEL_TRACES_EXPORTER names an exporter other than none, or
// it is unset and an OTLP endpoint is (its default is otlp).
func exportTraces(getenv func(string) string) bool {
	switch e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e {
	case "none":
		return false
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default:
		return true
	}
}

// pushMetrics: OTEL_METRICS_EXPORTER names a pushing exporter, or it is
// unset and an OTLP endpoint is. "prometheus" adds nothing: the ops port's
// /metrics always serves them.
func pushMetrics(getenv func(string) string) bool {
	switch e := strings.TrimSpace(getenv("OTEL_METRICS_EXPORTER")); e {
	case "none", "prometheus":
		return false
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""
	default:
		return true
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TraceHandler is a slog.Handler that adds trace_id and span_id to records
// logged with a context that carries a valid span.
type TraceHandler struct{ next slog.Handler }

// NewTraceHandler wraps next.
func NewTraceHandler(next slog.Handler) *TraceHandler { return &TraceHandler{next: next} }

// Enabled implements slog.Handler.
func (h *TraceHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *TraceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *TraceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &TraceHandler{next: h.next.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h *TraceHandler) WithGroup(name string) slog.Handler {
	return &TraceHandler{next: h.next.WithGroup(name)}
}

// Bucket boundaries of the histograms, explicit so a percentile means
// something (the SDK's default, 0 to 10,000, puts a 3 ms produce and a
// 5 ms one in one bucket).
var (
	// FastSeconds: operations of sub-milliseconds to seconds (a produce, a
	// batch's handling, a webhook request).
	FastSeconds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	// Records: counts of records in a batch.
	Records = []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500}
	// Bytes: body and record sizes.
	Bytes = []float64{256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304}
)

// dropping is the TracerProvider Setup installed to sample nothing (no trace
// exporter), while it is the global one.
var dropping atomic.Pointer[sdktrace.TracerProvider]

// SpansDropped reports whether no span of this process can be recorded: the
// global TracerProvider is the one Setup installs when no trace exporter is
// configured, which samples nothing. Code that starts a span per record or
// per request then need not: it passes the parent's span context on
// (NewTrace where it would start a root span), so trace ids are still
// created, logged and propagated in record headers. Only the span ids of
// spans nobody records go (a log line carries its parent's span id). This
// was ~7 % of the ingress's CPU at max load and a tenth of its allocations.
func SpansDropped() bool {
	p := dropping.Load()
	return p != nil && otel.GetTracerProvider() == trace.TracerProvider(p)
}

// NewTrace returns ctx carrying a new trace: random, non-zero trace and span
// ids, not sampled, no span — what starting a root span under SpansDropped
// gives, without its cost.
func NewTrace(ctx context.Context) context.Context {
	var cfg trace.SpanContextConfig
	for !cfg.TraceID.IsValid() {
		binary.LittleEndian.PutUint64(cfg.TraceID[:8], rand.Uint64())
		binary.LittleEndian.PutUint64(cfg.TraceID[8:], rand.Uint64())
	}
	for !cfg.SpanID.IsValid() {
		binary.LittleEndian.PutUint64(cfg.SpanID[:], rand.Uint64())
	}
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(cfg))
}
