// Package telemetrytest sets up telemetry for tests as a service without a
// trace exporter runs, and restores the process-wide state afterwards.
package telemetrytest

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel"

	"github.com/closedloop/closedloop/libs/telemetry"
)

// DroppingSpans runs telemetry.Setup with no exporter configured (so
// telemetry.SpansDropped is true) until tb ends, then puts back the global
// tracer provider, propagator and logger it replaced.
func DroppingSpans(tb testing.TB) *telemetry.Telemetry {
	tb.Helper()
	prev, prevProp, prevLog := otel.GetTracerProvider(), otel.GetTextMapPropagator(), slog.Default()
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{Service: "test", LogOutput: io.Discard, Getenv: func(string) string { return "" }})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = tel.Shutdown(context.Background())
		otel.SetTracerProvider(prev)
		otel.SetTextMapPropagator(prevProp)
		slog.SetDefault(prevLog)
	})
	if !telemetry.SpansDropped() {
		tb.Fatal("spans are recorded without an exporter")
	}
	return tel
}
