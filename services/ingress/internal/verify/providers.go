package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/closedloop/closedloop/libs/config"
)

// FieldRef names where a value is found: a request header or a dotted path
// into the JSON body. The header is tried first.
type FieldRef struct{ Header, Path string }

// Identity is what the ingress learns about an accepted webhook.
type Identity struct {
	// EventID is the provider's event or delivery id, else "sha256:" + the
	// hex SHA-256 of source and body: the same delivery always has the same id.
	EventID   string
	EventType string
	// Test is true for a provider's test delivery.
	Test bool
}

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

// builtin are the providers closedloop knows by name. Facts and the parts
// that are assumptions are in the design notes on providers:
//   - FeedBackPro documents a "send test event" button but not its payload;
//     an event named "test" or "test_event" is taken as the test (assumption).
var builtin = map[string]Provider{
	"delighted": {
		Scheme: HMAC{Header: "X-Delighted-Webhook-Signature", Algorithm: "sha256", Encoding: "hex", Prefix: "sha256="},
		ID:     FieldRef{Path: "event_id"}, Type: FieldRef{Path: "event_type"},
	},
	"delightloop": {
		Scheme: HMAC{Header: "X-DelightLoop-Signature", Algorithm: "sha256", Encoding: "hex"},
		Type:   FieldRef{Header: "X-DelightLoop-Event", Path: "event"},
		// No event id: derived from the body.
		KeepHeaders: []string{"X-DelightLoop-Event", "X-DelightLoop-Timestamp"},
	},
	"chattosurvey": {
		Scheme: None{},
		ID:     FieldRef{Header: "X-Webhook-ID", Path: "id"}, Type: FieldRef{Header: "X-Webhook-Event", Path: "event"},
		TestTypes:   []string{"test.webhook"},
		KeepHeaders: []string{"X-Webhook-ID", "X-Webhook-Event", "X-Webhook-Timestamp"},
	},
	"feedbackpro": {
		Scheme: HMAC{Header: "X-FeedbackPro-Signature", Algorithm: "sha256", Encoding: "hex"},
		ID:     FieldRef{Path: "id"}, Type: FieldRef{Path: "event"},
		TestTypes: []string{"test", "test_event"},
	},
	"standardwebhooks": {
		Scheme: StandardWebhooks{},
		ID:     FieldRef{Header: SWHeaderID}, Type: FieldRef{Path: "type"},
		KeepHeaders: []string{SWHeaderID, SWHeaderTimestamp},
	},
	"typeform": {
		Scheme: HMAC{Header: "Typeform-Signature", Algorithm: "sha256", Encoding: "base64", Prefix: "sha256="},
		ID:     FieldRef{Path: "event_id"}, Type: FieldRef{Path: "event_type"},
	},
	"github": {
		Scheme: HMAC{Header: "X-Hub-Signature-256", Algorithm: "sha256", Encoding: "hex", Prefix: "sha256="},
		ID:     FieldRef{Header: "X-GitHub-Delivery"}, Type: FieldRef{Header: "X-GitHub-Event"},
		TestTypes:   []string{"ping"},
		KeepHeaders: []string{"X-GitHub-Delivery", "X-GitHub-Event"},
	},
	"stripe": {
		Scheme: Stripe{},
		ID:     FieldRef{Path: "id"}, Type: FieldRef{Path: "type"},
	},
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
		p = Provider{Scheme: FromConfig(s.HMAC)}
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

// maxIDLen bounds a provider id used as-is; longer ones are hashed.
const maxIDLen = 200

// Identify finds the event id, type and test flag of an authentic request.
func (p Provider) Identify(source string, r Request) Identity {
	lookup := func(f FieldRef) string {
		if f.Header != "" {
			if v := strings.TrimSpace(r.Header.Get(f.Header)); v != "" {
				return v
			}
		}
		if f.Path == "" {
			return ""
		}
		return lookupPath(r.Body, f.Path)
	}
	id := Identity{EventID: lookup(p.ID), EventType: lookup(p.Type)}
	switch {
	case id.EventID == "":
		id.EventID = DerivedID(source, r.Body)
	case len(id.EventID) > maxIDLen || !printable(id.EventID):
		sum := sha256.Sum256([]byte(id.EventID))
		id.EventID = "sha256:" + hex.EncodeToString(sum[:])
	}
	if len(id.EventType) > maxIDLen || !printable(id.EventType) {
		id.EventType = ""
	}
	for _, t := range p.TestTypes {
		if id.EventType == t {
			id.Test = true
		}
	}
	return id
}

// DerivedID is the id of an event whose provider gives none: "sha256:" and
// the hex SHA-256 of the source name, a zero byte and the body.
func DerivedID(source string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte{0})
	h.Write(body)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
