package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/vectors"
)

// TestSchemesReachEveryVectorsVerdict runs every vector through its
// provider's scheme (the HTTP-level run is in package ingest).
func TestSchemesReachEveryVectorsVerdict(t *testing.T) {
	f, path, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			prov, err := ForSource(&config.Source{Name: "s", Provider: v.Provider})
			if err != nil {
				t.Fatalf("provider %q: %v", v.Provider, err)
			}
			scheme := prov.Scheme
			ran++
			sum := sha256.Sum256([]byte(v.Request.Body))
			if v.Request.BodySHA256 != "" && hex.EncodeToString(sum[:]) != v.Request.BodySHA256 {
				t.Fatalf("%s: body does not match body_sha256: the file was re-encoded", path)
			}
			h := http.Header{}
			for k, val := range v.Request.Headers {
				h.Set(k, val)
			}
			var secrets []config.Secret
			for _, s := range v.Secrets {
				secrets = append(secrets, config.NewSecret("test", []byte(s)))
			}
			err = scheme.Verify(Request{Header: h, Body: []byte(v.Request.Body), Now: time.Unix(v.Now, 0)}, secrets)
			switch v.Expect.Verdict {
			case "accept":
				if err != nil {
					t.Fatalf("rejected an authentic request: %v", err)
				}
			case "reject":
				rej, ok := err.(*Rejection)
				if !ok {
					t.Fatalf("accepted a request that must be rejected (%s)", v.Expect.Reason)
				}
				if rej.Reason != v.Expect.Reason {
					t.Fatalf("reason %q, want %q", rej.Reason, v.Expect.Reason)
				}
			default:
				t.Fatalf("unknown verdict %q", v.Expect.Verdict)
			}
		})
	}
	if ran != len(f.Vectors) {
		t.Fatalf("ran %d of %d vectors in %s", ran, len(f.Vectors), path)
	}
}

func TestNoSecretsMeansNothingVerifies(t *testing.T) {
	err := builtin["delighted"].Scheme.Verify(Request{Header: http.Header{"X-Delighted-Webhook-Signature": {"sha256=" + hex.EncodeToString(make([]byte, 32))}}, Body: []byte("{}")}, nil)
	if err == nil {
		t.Fatal("a source without secrets accepted a signature")
	}
}

func FuzzDelightedVerifyNeverPanics(f *testing.F) {
	f.Add("sha256=00", []byte(`{"event_id":"x"}`))
	f.Add("", []byte{})
	f.Add("sha256=zz", []byte{0xff})
	f.Fuzz(func(t *testing.T, sig string, body []byte) {
		_ = builtin["delighted"].Scheme.Verify(Request{Header: http.Header{"X-Delighted-Webhook-Signature": {sig}}, Body: body}, []config.Secret{config.NewSecret("k", []byte("k"))})
	})
}

func BenchmarkDelightedVerify(b *testing.B) {
	body := []byte(`{"event_type":"survey_response.created","event_id":"42b2876978c3f54ef4945f41bbc943a37732339b200c0ceffebcc79ef478b70a","event_data":{"id":"5435","score":9}}`)
	secrets := []config.Secret{config.NewSecret("k", []byte("dl_live_k3y9f8e7d6c5b4a"))}
	m := hmac.New(sha256.New, secrets[0].Reveal())
	m.Write(body)
	h := http.Header{"X-Delighted-Webhook-Signature": {"sha256=" + hex.EncodeToString(m.Sum(nil))}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := builtin["delighted"].Scheme.Verify(Request{Header: h, Body: body}, secrets); err != nil {
			b.Fatal(err)
		}
	}
}
