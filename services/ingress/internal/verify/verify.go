// Package verify checks webhook signatures and finds each webhook's event id
// and type. Every provider is a Provider: a Scheme (how its signature is
// checked) and the places its event id and type are found. Most providers
// are presets of the configurable HMAC scheme; Standard Webhooks and Stripe
// have signature headers of their own.
//
// Every comparison is constant-time and every active secret is tried (no
// early exit), so timing tells neither the signature nor which secret
// matched. A verdict is nil (authentic) or a *Rejection whose Reason is the
// machine-readable code the ingress answers with.
package verify

import (
	"net/http"
	"time"

	"github.com/closedloop/closedloop/libs/config"
)

// Reasons a request is rejected.
const (
	ReasonMissingSignature = "missing_signature"
	ReasonBadSignature     = "bad_signature"
	ReasonStaleTimestamp   = "stale_timestamp"
)

// DefaultTolerance is the largest accepted clock difference for schemes that
// sign a timestamp.
const DefaultTolerance = 5 * time.Minute

// Rejection is a failed verification. Its message never contains a secret
// or the expected signature.
type Rejection struct {
	Reason string
	Detail string
}

func (r *Rejection) Error() string { return r.Reason + ": " + r.Detail }

func missing(header string) error {
	return &Rejection{Reason: ReasonMissingSignature, Detail: header + " header is missing or empty"}
}

func bad(detail string) error { return &Rejection{Reason: ReasonBadSignature, Detail: detail} }

// Request is what a scheme verifies: the headers and the exact body bytes.
type Request struct {
	Header http.Header
	Body   []byte
	Now    time.Time
}

// Scheme verifies signatures against the source's active secrets (several
// during a rotation: any one of them may match).
type Scheme interface {
	Verify(r Request, secrets []config.Secret) error
	// Headers are the request headers Verify reads: the ingress gives it
	// those alone (the conformance vectors fail for a scheme that reads
	// another).
	Headers() []string
}

// None is the scheme of providers that sign nothing (ChatToSurvey): the
// secret ingest token in the URL, checked before, is the proof.
type None struct{}

// Verify implements Scheme.
func (None) Verify(Request, []config.Secret) error { return nil }

// Headers implements Scheme.
func (None) Headers() []string { return nil }
