// Package verify checks webhook signatures. Each provider's scheme is a
// Scheme; a verdict is nil (authentic) or a *Rejection whose Reason is the
// machine-readable code the ingress answers with.
package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"net/http"
	"strings"
	"time"

	"github.com/closedloop/closedloop/libs/config"
)

// Reasons a request is rejected.
const (
	ReasonMissingSignature = "missing_signature"
	ReasonBadSignature     = "bad_signature"
	ReasonStaleTimestamp   = "stale_timestamp"
)

// Rejection is a failed verification. Its message never contains a secret
// or the expected signature.
type Rejection struct {
	Reason string
	Detail string
}

func (r *Rejection) Error() string { return r.Reason + ": " + r.Detail }

// Request is what a scheme verifies: the headers and the exact body bytes.
type Request struct {
	Header http.Header
	Body   []byte
	Now    time.Time
}

// Scheme verifies one provider's signatures against the source's active
// secrets (several during a rotation: any one of them may match).
type Scheme interface {
	Verify(r Request, secrets []config.Secret) error
}

// ForProvider returns the scheme of a provider, or false.
func ForProvider(provider string) (Scheme, bool) {
	switch provider {
	case "delighted":
		return Delighted{}, true
	}
	return nil, false
}

// Delighted is Delighted's scheme: X-Delighted-Webhook-Signature is
// "sha256=" followed by the hex HMAC-SHA256 of the raw body keyed with the
// project's API key. It signs no timestamp, so replays are caught by dedupe.
type Delighted struct{}

// DelightedHeader is the header carrying Delighted's signature.
const DelightedHeader = "X-Delighted-Webhook-Signature"

// Verify implements Scheme.
func (Delighted) Verify(r Request, secrets []config.Secret) error {
	sig := strings.TrimSpace(r.Header.Get(DelightedHeader))
	if sig == "" {
		return &Rejection{Reason: ReasonMissingSignature, Detail: DelightedHeader + " header is missing or empty"}
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	if !ok {
		return &Rejection{Reason: ReasonBadSignature, Detail: DelightedHeader + " must start with sha256="}
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return &Rejection{Reason: ReasonBadSignature, Detail: DelightedHeader + " is not a hex SHA-256 digest"}
	}
	if !anyHMACMatches(sha256.New, secrets, r.Body, got) {
		return &Rejection{Reason: ReasonBadSignature, Detail: "signature does not match the body with any active secret"}
	}
	return nil
}

// anyHMACMatches computes the HMAC with every secret (no early exit, so the
// time taken does not tell which secret, if any, matched) and compares each
// in constant time.
func anyHMACMatches(h func() hash.Hash, secrets []config.Secret, msg, want []byte) bool {
	ok := false
	for _, s := range secrets {
		m := hmac.New(h, s.Reveal())
		m.Write(msg)
		if hmac.Equal(m.Sum(nil), want) {
			ok = true
		}
	}
	return ok
}
