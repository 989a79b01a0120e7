package providers

import (
	"encoding/json"
	"testing"
	"time"
)

// Every provider is complete: a scheme it can sign with, a mapping, and a
// sample that is JSON carrying the test id where the provider's id is.
func TestEveryProviderIsComplete(t *testing.T) {
	known := map[string]bool{MapDelighted: true, MapDelightLoop: true, MapChatToSurvey: true, MapFeedBackPro: true, MapTypeform: true, MapZendesk: true, MapFreshdesk: true, MapGeneric: true}
	now := time.Unix(1763800000, 0)
	for _, p := range All() {
		if p.Name == "" || p.Title == "" || !known[p.Mapping] || p.Sample == nil {
			t.Errorf("%+v is incomplete", p.Name)
			continue
		}
		if p.Scheme == HMACScheme && (p.HMAC.Header == "" || p.HMAC.Algorithm == "" || p.HMAC.Encoding == "") {
			t.Errorf("%s: HMAC scheme without header, algorithm or encoding", p.Name)
		}
		hdr, body := p.Sample("closedloop-test-abc", now)
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("%s: sample is not a JSON object: %v", p.Name, err)
		}
		if p.ID.Header != "" && hdr.Get(p.ID.Header) == "" && p.Scheme != StandardWebhooks {
			t.Errorf("%s: the sample does not carry its id in %s", p.Name, p.ID.Header)
		}
		if p.ID == (FieldRef{}) && p.Scheme != Configured {
			found := false
			for _, tt := range p.TestTypes {
				found = found || tt == TestEventType
			}
			if !found {
				t.Errorf("%s: no event id and no %s test type: a test event could not be told apart", p.Name, TestEventType)
			}
		}
	}
	if _, ok := Get("nosuch"); ok || len(Names()) != len(All()) {
		t.Fatal("Get or Names disagree with the table")
	}
}

// Known answers: GitHub's documented example, and the shared vector of
// Typeform (base64) from testdata.
func TestSignKnownAnswers(t *testing.T) {
	gh, _ := Get("github")
	h, err := Sign(gh, nil, []byte("It's a Secret to Everybody"), "", []byte("Hello, World!"), nil, time.Now())
	if err != nil || h.Get("X-Hub-Signature-256") != "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17" {
		t.Fatalf("github: %v %v", h, err)
	}
	tf, _ := Get("typeform")
	body := `{"event_id":"01HTFSXYZ","event_type":"form_response","form_response":{"form_id":"lT4Z3j","token":"a3a12ec67a1365927098a606107fac15","submitted_at":"2025-11-22T02:53:20Z","answers":[{"type":"number","number":8,"field":{"id":"nps1","type":"opinion_scale"}}]}}`
	h, err = Sign(tf, nil, []byte("tf_secret_s"), "", []byte(body), nil, time.Now())
	if err != nil || h.Get("Typeform-Signature") != "sha256=Ru4QKYAS8tlTalY5yLc1QCjSVY2BM28ZO26r3H3WzHo=" {
		t.Fatalf("typeform: %v %v", h, err)
	}
	hm, _ := Get("hmac")
	if _, err := Sign(hm, nil, []byte("s"), "", []byte("{}"), nil, time.Now()); err == nil {
		t.Fatal("a configured scheme signed without its block")
	}
	sw, _ := Get("standardwebhooks")
	if _, err := Sign(sw, nil, []byte("whsec_!!"), "id", []byte("{}"), nil, time.Now()); err == nil {
		t.Fatal("a bad whsec secret signed")
	}
}
