package ingest

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/valyala/fasthttp"

	"github.com/closedloop/closedloop/libs/config"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/services/ingress/internal/verify"
)

// FuzzTheHandler drives the whole HTTP handler — routing, token, media type,
// size, budgets, every provider's verification and identification, the
// record — with arbitrary requests to sources of every provider. It must
// never panic, answer only the statuses it documents, store a record exactly
// when it answers 202, and store only what the source's secret signed.
func FuzzTheHandler(f *testing.F) {
	var yml bytes.Buffer
	yml.WriteString("sources:\n")
	env := map[string]string{}
	names := []string{}
	for _, p := range verify.Names() {
		name := "s_" + p
		names = append(names, name)
		yml.WriteString("  - name: " + name + "\n    provider: " + p + "\n    ingest_tokens: [env:T]\n    rate_limit: {per_second: 1000000, burst: 1000000}\n")
		if config.Providers[p] {
			yml.WriteString("    secrets: [env:K]\n")
		}
	}
	env["K"], env["T"] = secret, token
	pipe, err := config.ParsePipeline(yml.Bytes(), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		f.Fatal(err)
	}
	rec := &recorder{}
	h, err := New(Options{Pipeline: pipe, Producer: rec, RawTopic: "raw", MaxBody: 64 << 10, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return time.Unix(1763800000, 0) }})
	if err != nil {
		f.Fatal(err)
	}
	allowed := map[int]bool{202: true, 400: true, 401: true, 404: true, 405: true, 413: true, 415: true, 429: true, 503: true}

	f.Add(uint8(0), true, true, "application/json", "", []byte(body))
	f.Add(uint8(0), true, false, "application/json", "sha256=00", []byte(body))
	f.Add(uint8(1), false, true, "text/plain", "", []byte(`{}`))
	f.Add(uint8(2), true, true, "application/vnd.api+json; charset=utf-8", "", []byte(`{"event_id":"\u00ff","event_type":"x"}`))
	f.Fuzz(func(t *testing.T, src uint8, goodToken, signIt bool, contentType, sigHeader string, b []byte) {
		name := names[int(src)%len(names)]
		tok := token
		if !goodToken {
			tok = "tok_wrong_0123456789abcdefghij"
		}
		var req fasthttp.Request
		req.Header.SetMethod(http.MethodPost)
		req.SetRequestURI("/v1/hooks/" + name + "/" + tok)
		req.Header.SetContentType(contentType)
		req.SetBody(b)
		req.Header.SetContentLength(len(b))
		if signIt {
			sigHeader = sign(string(b))
		}
		for _, hdr := range []string{"X-Delighted-Webhook-Signature", "Typeform-Signature", "X-Hub-Signature-256", "Webhook-Signature", "X-Signature"} {
			req.Header.Set(hdr, sigHeader)
		}
		rec.mu.Lock()
		before := len(rec.recs)
		rec.mu.Unlock()
		var w fasthttp.RequestCtx
		w.Init(&req, nil, nil)
		h.Handle(&w)
		code := w.Response.StatusCode()
		rec.mu.Lock()
		stored := rec.recs[before:]
		rec.mu.Unlock()
		if !allowed[code] {
			t.Fatalf("status %d is not one the handler documents", code)
		}
		if (code == http.StatusAccepted) != (len(stored) == 1) || len(stored) > 1 {
			t.Fatalf("status %d with %d records stored", code, len(stored))
		}
		if len(stored) == 1 {
			var raw feedbackv1.RawWebhook
			if err := proto.Unmarshal(stored[0].Value, &raw); err != nil {
				t.Fatalf("stored record does not decode: %v", err)
			}
			if !bytes.Equal(raw.Body, b) || raw.Source != name || raw.EventId == "" || !goodToken {
				t.Fatalf("stored %+v for a request to %s (token ok %v)", &raw, name, goodToken)
			}
		}
	})
}
