package verify

import (
	"fmt"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/providers"
)

// FieldRef names where a value is found: a request header or a dotted path
// into the JSON body. The header is tried first.
type FieldRef struct{ Header, Path string }

// Identity is what the ingress learns about an accepted webhook.
type Identity = providers.Identity

// Provider is a provider's scheme and where its ids are.
type Provider struct {
	Name   string
	Scheme Scheme
	ID     FieldRef
	Type   FieldRef
	// TestTypes are event types that mark a test delivery.
	TestTypes []string
	// KeepHeaders are the provider's non-secret headers worth keeping with
	// the event (delivery ids, event names, timestamps).
	KeepHeaders []string
}

// builtin are the providers closedloop knows by name, derived from the
// provider table (package providers): the scheme each declares becomes its
// verifier here.
var builtin = func() map[string]Provider {
	m := map[string]Provider{}
	for _, d := range providers.All() {
		if d.Configurable() {
			continue // "hmac": the source's own block, in ForSource
		}
		m[d.Name] = Provider{Name: d.Name, Scheme: SchemeOf(d), ID: FieldRef(d.ID), Type: FieldRef(d.Type),
			TestTypes: d.TestTypes, KeepHeaders: d.KeepHeaders}
	}
	return m
}()

// SchemeOf is the verifier of a provider's declared scheme.
func SchemeOf(d providers.Provider) Scheme {
	switch d.Scheme {
	case providers.HMACScheme:
		return HMAC(d.HMAC)
	case providers.StandardWebhooks:
		return StandardWebhooks{}
	case providers.Stripe:
		return Stripe{}
	}
	return None{}
}

// Names lists the built-in providers.
func Names() []string {
	out := make([]string, 0, len(builtin))
	for n := range builtin {
		out = append(out, n)
	}
	return out
}

// ForSource returns the provider of a configured source: a built-in one
// (its event_id/event_type fields may override where ids are found) or the
// generic HMAC scheme of a provider "hmac" source.
func ForSource(s *config.Source) (Provider, error) {
	var p Provider
	if s.Provider == "hmac" {
		if s.HMAC == nil {
			return p, fmt.Errorf("source %s: provider hmac without an hmac block", s.Name)
		}
		p = Provider{Scheme: HMAC(s.HMAC.Spec())}
		for _, h := range []string{s.HMAC.TimestampHeader, s.HMAC.IDHeader, s.EventID.Header, s.EventType.Header} {
			if h != "" {
				p.KeepHeaders = append(p.KeepHeaders, h)
			}
		}
	} else {
		b, ok := builtin[s.Provider]
		if !ok {
			return p, fmt.Errorf("source %s: provider %q has no signature scheme", s.Name, s.Provider)
		}
		p = b
	}
	p.Name = s.Provider
	if s.EventID != (config.FieldRef{}) {
		p.ID = FieldRef(s.EventID)
	}
	if s.EventType != (config.FieldRef{}) {
		p.Type = FieldRef(s.EventType)
	}
	return p, nil
}

// Headers are the request headers verifying, identifying and keeping a
// request of this provider read.
func (p Provider) Headers() []string {
	out := append([]string(nil), p.Scheme.Headers()...)
	for _, h := range []string{p.ID.Header, p.Type.Header} {
		if h != "" {
			out = append(out, h)
		}
	}
	return append(out, p.KeepHeaders...)
}

// Identify finds the event id, type and test flag of an authentic request
// (providers.Identify: the admin's test events are found by the same rule).
func (p Provider) Identify(source string, r Request) Identity {
	return providers.Identify(source, providers.FieldRef(p.ID), providers.FieldRef(p.Type), p.TestTypes, r.Header, r.Body)
}
