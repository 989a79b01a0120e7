package providers

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// Identity is what an accepted webhook is known by.
type Identity struct {
	// EventID is the provider's event or delivery id, else "sha256:" + the
	// hex SHA-256 of source and body: the same delivery always has the same id.
	EventID   string
	EventType string
	// Test is true for a provider's test delivery.
	Test bool
}

// MaxIDLen bounds a provider id used as-is; longer ones are hashed.
const MaxIDLen = 200

// Identify finds the event id, type and test flag of a request whose id and
// type are where idRef and typeRef say (the header first, then the dotted
// body path). The ingress identifies every webhook by it, and the admin
// service finds its test events by it.
func Identify(source string, idRef, typeRef FieldRef, testTypes []string, header http.Header, body []byte) Identity {
	lookup := func(f FieldRef) string {
		if f.Header != "" {
			if v := strings.TrimSpace(header.Get(f.Header)); v != "" {
				return v
			}
		}
		if f.Path == "" {
			return ""
		}
		return LookupPath(body, f.Path)
	}
	id := Identity{EventID: lookup(idRef), EventType: lookup(typeRef)}
	switch {
	case id.EventID == "":
		id.EventID = DerivedID(source, body)
	case len(id.EventID) > MaxIDLen || !Printable(id.EventID):
		sum := sha256.Sum256([]byte(id.EventID))
		id.EventID = "sha256:" + hex.EncodeToString(sum[:])
	}
	if len(id.EventType) > MaxIDLen || !Printable(id.EventType) {
		id.EventType = ""
	}
	for _, t := range testTypes {
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

// Printable reports whether s has no control characters.
func Printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
