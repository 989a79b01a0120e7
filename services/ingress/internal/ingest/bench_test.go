package ingest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/telemetry/telemetrytest"
)

// acker acknowledges every record at once and keeps nothing.
type acker struct{}

func (acker) Produce(context.Context, ...kafkaio.Record) error { return nil }

// BenchmarkWebhook is one accepted webhook through the ingress's handler
// as the webhook port serves it (the route, the span, the metrics, the
// handler) with telemetry as production sets it up without an exporter, and
// a producer that acknowledges at once: the ingress's own CPU and
// allocations per request, without the HTTP parsing, the network and Kafka.
//
//	cd services/ingress && go test -run XXX -bench Webhook -benchmem ./internal/ingest
func BenchmarkWebhook(b *testing.B) {
	telemetrytest.DroppingSpans(b)
	pipe, err := config.ParsePipeline([]byte("sources:\n  - name: delighted\n    provider: delighted\n    secrets: [env:K]\n    ingest_tokens: [env:T]\n    rate_limit: {per_second: 100000000}\n"),
		func(k string) (string, bool) { return map[string]string{"K": secret, "T": token}[k], true })
	if err != nil {
		b.Fatal(err)
	}
	h, err := New(Options{Pipeline: pipe, Producer: acker{}, RawTopic: "raw", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	// A ~1.5 KiB Delighted body, as the load benchmarks send.
	payload := `{"event_type":"survey_response.created","event_id":"evt_` + strings.Repeat("7", 24) + `","event_data":{"id":"1","score":9,"comment":"` +
		strings.Repeat("lorem ipsum ", 110) + `"}}`
	var req fasthttp.Request
	req.Header.SetMethod(http.MethodPost)
	req.SetRequestURI("/v1/hooks/delighted/" + token)
	req.Header.SetContentType("application/json")
	req.Header.Set("X-Delighted-Webhook-Signature", sign(payload))
	req.Header.Set("User-Agent", "Delighted-Webhooks/1.0")
	req.SetBodyString(payload)
	req.Header.SetContentLength(len(payload))
	var rc fasthttp.RequestCtx
	rc.Init(&req, nil, nil)
	ok := 0
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		rc.Response.Reset()
		h.Handle(&rc)
		ok++
	}
	if n := h.traffic.m["delighted"]; n == nil || n.accepted.Load() != int64(ok) || rc.Response.StatusCode() != http.StatusAccepted {
		b.Fatalf("accepted %v of %d (status counts), last status %d", n, ok, rc.Response.StatusCode())
	}
}
