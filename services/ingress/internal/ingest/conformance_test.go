package ingest

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/vectors"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// TestConformanceEveryVectorThroughTheHTTPHandler posts every vector
// (testdata/webhooks/vectors.json, or CLOSEDLOOP_VECTORS) to the real
// handler, on a source of the vector's provider with the vector's secrets
// and clock, and checks the status, the reason, and for accepted vectors the
// RawWebhook written: the body byte for byte, the event id (the provider's,
// or derived so that a duplicate delivery gets the same one) and the test flag.
// With CLOSEDLOOP_CONFORMANCE_RECORDS set it appends each accepted vector's
// record to that file, for the end-to-end meaning check (tools/e2e).
func TestConformanceEveryVectorThroughTheHTTPHandler(t *testing.T) {
	f, path, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{} // vector name -> event id written
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			rec := &recorder{}
			srv, tok, h := vectorServer(t, v, rec)
			req, _ := http.NewRequest(orDefault(v.Request.Method, http.MethodPost), srv.URL+"/v1/hooks/src/"+tok, strings.NewReader(v.Request.Body))
			for k, val := range v.Request.Headers {
				req.Header.Set(k, val)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var a answer
			_ = json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()

			if v.Expect.Verdict == "reject" {
				if resp.StatusCode != v.Expect.Status || a.Error != v.Expect.Reason {
					t.Fatalf("got %d %q, want %d %q", resp.StatusCode, a.Error, v.Expect.Status, v.Expect.Reason)
				}
				if len(rec.recs) != 0 {
					t.Fatal("a rejected webhook was written to Kafka")
				}
				return
			}
			if resp.StatusCode/100 != 2 || len(rec.recs) != 1 {
				t.Fatalf("got %d %+v with %d records, want 2xx and one record", resp.StatusCode, a, len(rec.recs))
			}
			var raw feedbackv1.RawWebhook
			if err := proto.Unmarshal(rec.recs[0].Value, &raw); err != nil {
				t.Fatal(err)
			}
			if string(raw.Body) != v.Request.Body || string(rec.recs[0].Key) != raw.EventId || a.EventID != raw.EventId {
				t.Fatalf("record key %q, answer id %q, raw %v", rec.recs[0].Key, a.EventID, &raw)
			}
			if v.Expect.EventID != "" && raw.EventId != v.Expect.EventID {
				t.Fatalf("event id %q, want %q", raw.EventId, v.Expect.EventID)
			}
			if v.Expect.EventType != "" && raw.EventType != v.Expect.EventType {
				t.Fatalf("event type %q, want %q", raw.EventType, v.Expect.EventType)
			}
			if wantTest := v.Expect.Canonical["kind"] == "test"; raw.Test != wantTest {
				t.Fatalf("test flag %v, want %v", raw.Test, wantTest)
			}
			for k := range raw.Headers {
				if strings.Contains(k, "signature") {
					t.Fatalf("signature header %s kept with the event", k)
				}
			}
			// Every header the provider keeps that the request had is in
			// the record (the handler copies only the headers it reads).
			for _, kh := range h.sources.Load().byName["src"].kept {
				for name, val := range v.Request.Headers {
					if strings.EqualFold(name, kh.canonical) && val != "" && raw.Headers[kh.lower] != val {
						t.Fatalf("header %s: kept %q, sent %q", kh.canonical, raw.Headers[kh.lower], val)
					}
				}
			}
			ids[v.Name] = raw.EventId
			out := vectors.Record{Vector: v.Name, Key: rec.recs[0].Key, Value: rec.recs[0].Value}
			for _, h := range rec.recs[0].Headers {
				out.Headers = append(out.Headers, vectors.Header{Key: h.Key, Value: h.Value})
			}
			if err := vectors.AppendRecord(out); err != nil {
				t.Fatal(err)
			}
			if d := v.Expect.DuplicateOf; d != "" {
				if ids[d] == "" {
					t.Fatalf("duplicate_of %q: that vector must come earlier in %s", d, path)
				}
				if ids[d] != raw.EventId {
					t.Fatalf("event id %q differs from %q of %s: the duplicate would not be caught", raw.EventId, ids[d], d)
				}
			}
		})
	}
}

// vectorServer serves one source "src" of the vector's provider.
func vectorServer(t *testing.T, v vectors.Vector, p Producer) (testServer, string, *Handler) {
	t.Helper()
	env := map[string]string{"TOKEN": "tok_conformance_0123456789abcdef"}
	var refs []string
	for i, s := range v.Secrets {
		name := "SECRET_" + string(rune('A'+i))
		env[name] = s
		refs = append(refs, "env:"+name)
	}
	yml := "sources:\n  - name: src\n    provider: " + v.Provider + "\n    ingest_tokens: [env:TOKEN]\n    rate_limit: {per_second: 1000}\n"
	if len(refs) > 0 {
		yml += "    secrets: [" + strings.Join(refs, ", ") + "]\n"
	}
	pipe, err := config.ParsePipeline([]byte(yml), func(k string) (string, bool) { val, ok := env[k]; return val, ok })
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Pipeline: pipe, Producer: p, RawTopic: "raw", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return time.Unix(v.Now, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return testServer{listen(t, h, ServerOptions{})}, env["TOKEN"], h
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
