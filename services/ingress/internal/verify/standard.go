package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/providers"
)

// StandardWebhooks is the Standard Webhooks scheme (standardwebhooks.com,
// Svix): webhook-signature is a space-separated list of "v1,<base64
// HMAC-SHA256(key, id.timestamp.body)>" (several during a rotation), the key
// is the base64 after "whsec_", and webhook-timestamp must be within
// Tolerance (default 5 min) of now.
type StandardWebhooks struct{ Tolerance time.Duration }

// Standard Webhooks header names.
const (
	SWHeaderID        = "webhook-id"
	SWHeaderTimestamp = "webhook-timestamp"
	SWHeaderSignature = "webhook-signature"
)

// Headers implements Scheme.
func (StandardWebhooks) Headers() []string {
	return []string{SWHeaderID, SWHeaderTimestamp, SWHeaderSignature}
}

// Verify implements Scheme.
func (s StandardWebhooks) Verify(r Request, secrets []config.Secret) error {
	sigs := strings.TrimSpace(r.Header.Get(SWHeaderSignature))
	if sigs == "" {
		return missing(SWHeaderSignature)
	}
	id := strings.TrimSpace(r.Header.Get(SWHeaderID))
	if id == "" {
		return bad(SWHeaderID + " header is missing: it is part of the signed content")
	}
	ts := strings.TrimSpace(r.Header.Get(SWHeaderTimestamp))
	tol := s.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	if err := checkTimestamp(SWHeaderTimestamp, providers.TimestampUnix, ts, r.Now, tol); err != nil {
		return err
	}
	var candidates [][]byte
	for _, part := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(part, ",")
		if !ok || version != "v1" {
			continue // other versions (v1a: asymmetric) are not HMAC
		}
		if b, err := base64.StdEncoding.DecodeString(sig); err == nil && len(b) == sha256.Size {
			candidates = append(candidates, b)
		}
	}
	if len(candidates) == 0 {
		return bad(SWHeaderSignature + " holds no v1 signature")
	}
	ok, err := matchesAny("sha256", "whsec", secrets, expand("{id}.{timestamp}.{body}", id, ts, r.Body), candidates...)
	if err != nil {
		return err
	}
	if !ok {
		return bad("no signature matches the content with any active secret")
	}
	return nil
}

// Stripe is Stripe's scheme: Stripe-Signature is "t=<unix>,v1=<hex
// HMAC-SHA256(secret, t.body)>[,v1=...]", the whole secret string is the
// key, and t must be within Tolerance (default 5 min) of now.
type Stripe struct{ Tolerance time.Duration }

// StripeHeader carries Stripe's signature.
const StripeHeader = "Stripe-Signature"

// Headers implements Scheme.
func (Stripe) Headers() []string { return []string{StripeHeader} }

// Verify implements Scheme.
func (s Stripe) Verify(r Request, secrets []config.Secret) error {
	raw := strings.TrimSpace(r.Header.Get(StripeHeader))
	if raw == "" {
		return missing(StripeHeader)
	}
	var ts string
	var candidates [][]byte
	for _, kv := range strings.Split(raw, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := decodeSig(nil, "hex", v); err == nil && len(b) == sha256.Size {
				candidates = append(candidates, b)
			}
		}
	}
	if ts == "" || len(candidates) == 0 {
		return bad(StripeHeader + " needs t= and at least one v1= signature")
	}
	tol := s.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	if err := checkTimestamp(StripeHeader+" t", providers.TimestampUnix, ts, r.Now, tol); err != nil {
		return err
	}
	if ok, _ := matchesAny("sha256", "raw", secrets, expand("{timestamp}.{body}", "", ts, r.Body), candidates...); !ok {
		return bad("no signature matches the content with any active secret")
	}
	return nil
}
