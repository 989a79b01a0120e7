package verify

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/providers"
)

func mac(h func() hash.Hash, key, msg string) []byte {
	m := hmac.New(h, []byte(key))
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func TestTheConfigurableSchemeCoversEachOfItsOptions(t *testing.T) {
	now := time.Unix(1763800000, 0)
	ts := strconv.FormatInt(now.Unix()-30, 10)
	body := `{"id":"d1","event":"x"}`
	sec := []config.Secret{config.NewSecret("k", []byte("s3cret"))}
	cases := []struct {
		name   string
		scheme HMAC
		header http.Header
		secret []config.Secret
		want   string // "" accept, else the rejection reason
	}{
		{"sha1 hex with a prefix", HMAC{Header: "X-Sig", Algorithm: "sha1", Encoding: "hex", Prefix: "sha1="},
			http.Header{"X-Sig": {"sha1=" + hex.EncodeToString(mac(sha1.New, "s3cret", body))}}, sec, ""},
		{"sha512 base64", HMAC{Header: "X-Sig", Algorithm: "sha512", Encoding: "base64"},
			http.Header{"X-Sig": {base64.StdEncoding.EncodeToString(mac(sha512.New, "s3cret", body))}}, sec, ""},
		{"sha256 in URL-safe base64 without padding", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "base64"},
			http.Header{"X-Sig": {base64.RawURLEncoding.EncodeToString(mac(sha256.New, "s3cret", body))}}, sec, ""},
		{"timestamp and body signed, Zendesk style", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "base64", Signed: "{timestamp}{body}", TimestampHeader: "X-Ts"},
			http.Header{"X-Sig": {base64.StdEncoding.EncodeToString(mac(sha256.New, "s3cret", ts+body))}, "X-Ts": {ts}}, sec, ""},
		{"a timestamp outside the tolerance", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "hex", Signed: "{timestamp}.{body}", TimestampHeader: "X-Ts", Tolerance: 10 * time.Second},
			http.Header{"X-Sig": {hex.EncodeToString(mac(sha256.New, "s3cret", ts+"."+body))}, "X-Ts": {ts}}, sec, ReasonStaleTimestamp},
		{"id, timestamp and body signed", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "hex", Signed: "{id}.{timestamp}.{body}", TimestampHeader: "X-Ts", IDHeader: "X-Id"},
			http.Header{"X-Sig": {hex.EncodeToString(mac(sha256.New, "s3cret", "d1."+ts+"."+body))}, "X-Ts": {ts}, "X-Id": {"d1"}}, sec, ""},
		{"a swapped id", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "hex", Signed: "{id}.{timestamp}.{body}", TimestampHeader: "X-Ts", IDHeader: "X-Id"},
			http.Header{"X-Sig": {hex.EncodeToString(mac(sha256.New, "s3cret", "d1."+ts+"."+body))}, "X-Ts": {ts}, "X-Id": {"d2"}}, sec, ReasonBadSignature},
		{"a whsec secret", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "base64", SecretEncoding: "whsec"},
			http.Header{"X-Sig": {base64.StdEncoding.EncodeToString(mac(sha256.New, "raw-key-bytes", body))}},
			[]config.Secret{config.NewSecret("k", []byte("whsec_"+base64.StdEncoding.EncodeToString([]byte("raw-key-bytes"))))}, ""},
		{"the old secret during a rotation", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "hex"},
			http.Header{"X-Sig": {hex.EncodeToString(mac(sha256.New, "old", body))}},
			[]config.Secret{config.NewSecret("new", []byte("new")), config.NewSecret("old", []byte("old"))}, ""},
		{"a missing header", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "hex"}, http.Header{}, sec, ReasonMissingSignature},
		{"a digest of the wrong length", HMAC{Header: "X-Sig", Algorithm: "sha256", Encoding: "hex"},
			http.Header{"X-Sig": {hex.EncodeToString(mac(sha1.New, "s3cret", body))}}, sec, ReasonBadSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.scheme.Verify(Request{Header: c.header, Body: []byte(body), Now: now}, c.secret)
			if c.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			rej, ok := err.(*Rejection)
			if !ok || rej.Reason != c.want {
				t.Fatalf("got %v, want %s", err, c.want)
			}
		})
	}
}

func TestIdentifyUsesHeaderThenBodyThenADerivedID(t *testing.T) {
	p := Provider{ID: FieldRef{Header: "X-Id", Path: "meta.id"}, Type: FieldRef{Path: "event"}, TestTypes: []string{"ping"}}
	body := []byte(`{"meta":{"id":42},"event":"ping"}`)
	if id := p.Identify("s", Request{Header: http.Header{"X-Id": {"h1"}}, Body: body}); id.EventID != "h1" || id.EventType != "ping" || !id.Test {
		t.Fatalf("with header: %+v", id)
	}
	if id := p.Identify("s", Request{Header: http.Header{}, Body: body}); id.EventID != "42" {
		t.Fatalf("from the body path: %+v", id)
	}
	a := p.Identify("s", Request{Header: http.Header{}, Body: []byte(`not json`)})
	b := p.Identify("s", Request{Header: http.Header{}, Body: []byte(`not json`)})
	if a.EventID != b.EventID || a.EventID != providers.DerivedID("s", []byte("not json")) {
		t.Fatalf("derived ids differ: %q %q", a.EventID, b.EventID)
	}
	long := p.Identify("s", Request{Header: http.Header{"X-Id": {string(make([]byte, 300))}}, Body: body})
	if len(long.EventID) > providers.MaxIDLen {
		t.Fatalf("an oversized id was kept: %d bytes", len(long.EventID))
	}
}

func TestEveryConfigurableProviderHasAScheme(t *testing.T) {
	for name := range config.Providers {
		src := &config.Source{Name: "s", Provider: name}
		if name == "hmac" {
			src.HMAC = &config.HMACScheme{Header: "X-Sig"}
		}
		if _, err := ForSource(src); err != nil {
			t.Errorf("provider %s: %v", name, err)
		}
	}
}

func FuzzIdentify(f *testing.F) {
	f.Add("h", []byte(`{"event_id":"e","event_type":"t","data":{"id":1}}`))
	f.Add("", []byte(`{"data":{"id":{"x":[1,2]}}}`))
	f.Add("\x00", []byte(`[`))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		p := Provider{ID: FieldRef{Header: "X-Id", Path: "data.id"}, Type: FieldRef{Path: "event_type"}}
		id := p.Identify("s", Request{Header: http.Header{"X-Id": {header}}, Body: body})
		if id.EventID == "" || len(id.EventID) > providers.MaxIDLen || !providers.Printable(id.EventID) {
			t.Fatalf("unusable event id %q", id.EventID)
		}
	})
}

func FuzzSignatureHeaders(f *testing.F) {
	f.Add("t=1763799990,v1=b2cd", "v1,u39Y/jttkMeLLwFUm7eO2JPx90hX92wFgrnbabzskpU= v1a,xx", "sha256=00")
	f.Add("", "", "")
	f.Add("t=,v1=,v1", "v1,", "sha256=")
	f.Fuzz(func(t *testing.T, stripe, sw, prefixed string) {
		sec := []config.Secret{config.NewSecret("k", []byte("whsec_"+base64.StdEncoding.EncodeToString([]byte("k"))))}
		h := http.Header{StripeHeader: {stripe}, SWHeaderSignature: {sw}, SWHeaderID: {"id"}, SWHeaderTimestamp: {"1763800000"},
			"Typeform-Signature": {prefixed}, "X-Hub-Signature-256": {prefixed}}
		r := Request{Header: h, Body: []byte("{}"), Now: time.Unix(1763800000, 0)}
		for _, s := range []Scheme{Stripe{}, StandardWebhooks{}, builtin["typeform"].Scheme, builtin["github"].Scheme} {
			if err := s.Verify(r, sec); err == nil {
				t.Fatalf("%T accepted a forged header", s)
			}
		}
	})
}
