package ingest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/telemetry/telemetrytest"
)

// acker acknowledges every record at once and keeps nothing.
type acker struct{}

func (acker) Produce(context.Context, ...kafkaio.Record) error { return nil }

// discard is a ResponseWriter that keeps only its header map.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// rereader is a request body that can be read again after Reset.
type rereader struct{ bytes.Reader }

func (*rereader) Close() error { return nil }

// BenchmarkWebhook is one accepted webhook through the ingress's handler
// chain as the service mounts it (Traced, the mux, the metrics, the
// handler) with telemetry as production sets it up without an exporter, and
// a producer that acknowledges at once: the ingress's own CPU and
// allocations per request, without the HTTP server, the network and Kafka.
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
	mux := http.NewServeMux()
	h.Mount(mux)
	srv := Traced(mux)
	// A ~1.5 KiB Delighted body, as the load benchmarks send.
	payload := `{"event_type":"survey_response.created","event_id":"evt_` + strings.Repeat("7", 24) + `","event_data":{"id":"1","score":9,"comment":"` +
		strings.Repeat("lorem ipsum ", 110) + `"}}`
	sig := sign(payload)
	body := &rereader{}
	req, _ := http.NewRequest(http.MethodPost, "http://ingress/v1/hooks/delighted/"+token, body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Delighted-Webhook-Signature", sig)
	req.ContentLength = int64(len(payload))
	w := &discard{h: http.Header{}}
	ok := 0
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		body.Reset([]byte(payload))
		clear(w.h)
		srv.ServeHTTP(w, req)
		ok++
	}
	if n := h.traffic.m["delighted"]; n == nil || n.accepted.Load() != int64(ok) {
		b.Fatalf("accepted %v of %d (status counts)", n, ok)
	}
}
