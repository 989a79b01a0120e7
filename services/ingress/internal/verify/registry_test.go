package verify

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/feedback"
	"github.com/closedloop/closedloop/libs/providers"
	"github.com/closedloop/closedloop/libs/vectors"
)

// Every provider of the table has a verifier here, signed vectors that run
// through it (the configurable "hmac" scheme excepted: its tests configure
// it), and a test event that the admin signs and this verifier accepts as a
// test — so a provider cannot ship half-done.
func TestEveryProviderHasAVerifierVectorsAndATestEvent(t *testing.T) {
	f, path, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	accepted := map[string]int{}
	for _, v := range f.Vectors {
		if _, ok := providers.Get(v.Provider); !ok {
			t.Errorf("%s: vector %s names provider %q, which is not in the table", path, v.Name, v.Provider)
		}
		if v.Expect.Verdict == "accept" {
			accepted[v.Provider]++
		}
	}
	now := time.Unix(1763800000, 0)
	for _, d := range providers.All() {
		src := &config.Source{Name: "s", Provider: d.Name}
		secret := "closedloop-test-secret"
		var scheme *providers.HMAC
		switch {
		case d.Configurable():
			src.HMAC = &config.HMACScheme{Header: "X-Sig", Algorithm: "sha512", Encoding: "base64", Signed: "{timestamp}.{body}", TimestampHeader: "X-Ts"}
			src.EventID, src.EventType = config.FieldRef{Path: "meta.delivery"}, config.FieldRef{Header: "X-Kind"}
			spec := src.HMAC.Spec()
			scheme = &spec
		case d.Scheme == providers.StandardWebhooks:
			secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("closedloop-test-key"))
		}
		p, err := ForSource(src)
		if err != nil {
			t.Errorf("%s: no verifier: %v", d.Name, err)
			continue
		}
		if !d.Configurable() && accepted[d.Name] == 0 {
			t.Errorf("%s: no accepted vector in %s", d.Name, path)
		}
		id := feedback.TestEventPrefix + "abc123"
		extra, body := d.Sample(id, now)
		if d.Configurable() {
			extra, body = providers.SampleAt(id, now, providers.FieldRef(src.EventID), providers.FieldRef(src.EventType))
		}
		h, err := providers.Sign(d, scheme, []byte(secret), id, body, extra, now)
		if err != nil {
			t.Errorf("%s: signing the test event: %v", d.Name, err)
			continue
		}
		req := Request{Header: h, Body: body, Now: now}
		if err := p.Scheme.Verify(req, []config.Secret{config.NewSecret("s", []byte(secret))}); err != nil {
			t.Errorf("%s: its own test event does not verify: %v", d.Name, err)
		}
		if d.Signs() {
			if err := p.Scheme.Verify(req, []config.Secret{config.NewSecret("s", []byte(secret+"x"))}); err == nil && !strings.HasPrefix(secret, "whsec_") {
				t.Errorf("%s: the test event verifies with another secret", d.Name)
			}
		}
		ident := p.Identify("s", req)
		if !ident.Test && ident.EventID != id {
			t.Errorf("%s: the test event is neither flagged test nor identified by its id (%+v)", d.Name, ident)
		}
	}
}
