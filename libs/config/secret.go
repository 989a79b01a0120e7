package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secret is a resolved secret value. Its String, GoString and LogValue never
// reveal the value, so a Secret can sit in a config struct that gets printed
// or logged by mistake.
type Secret struct {
	ref   string
	value []byte
}

// NewSecret wraps a value that was obtained some other way (tests, generators).
func NewSecret(ref string, value []byte) Secret { return Secret{ref: ref, value: value} }

// Reveal returns the secret bytes. Call it only where the value is used.
func (s Secret) Reveal() []byte { return s.value }

// Ref is the reference the secret was resolved from, e.g. "env:DELIGHTED_KEY".
// It is safe to log.
func (s Secret) Ref() string { return s.ref }

// IsZero reports whether no value was resolved.
func (s Secret) IsZero() bool { return len(s.value) == 0 }

func (s Secret) String() string               { return "[secret " + s.ref + "]" }
func (s Secret) GoString() string             { return s.String() }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(s.String()) }
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ErrSecretRef is returned for a reference that is not env:NAME or file:PATH.
var ErrSecretRef = errors.New("secret reference must be env:NAME or file:PATH")

// checkRef checks that ref has the form env:NAME or file:PATH without reading it.
func checkRef(ref string) error {
	kind, arg, ok := strings.Cut(ref, ":")
	if !ok || arg == "" || (kind != "env" && kind != "file") {
		return fmt.Errorf("%w (literal secrets are not accepted)", ErrSecretRef)
	}
	return nil
}

// ResolveSecret reads a secret reference: "env:NAME" takes the environment
// variable NAME, "file:PATH" the file's contents with one trailing newline
// removed (as Kubernetes secret volumes and `echo` write them). A literal
// value is refused so that secrets never live in YAML.
func ResolveSecret(ref string, lookup func(string) (string, bool)) (Secret, error) {
	kind, arg, ok := strings.Cut(ref, ":")
	if !ok || arg == "" {
		return Secret{}, fmt.Errorf("%w (got a value that is neither; literal secrets are not accepted)", ErrSecretRef)
	}
	switch kind {
	case "env":
		if lookup == nil {
			return Secret{}, fmt.Errorf("secret %s: no environment to read it from", ref)
		}
		v, ok := lookup(arg)
		if !ok || v == "" {
			return Secret{}, fmt.Errorf("secret %s: environment variable %s is not set", ref, arg)
		}
		return Secret{ref: ref, value: []byte(v)}, nil
	case "file":
		b, err := os.ReadFile(arg)
		if err != nil {
			return Secret{}, fmt.Errorf("secret %s: %w", ref, err)
		}
		b = []byte(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
		if len(b) == 0 {
			return Secret{}, fmt.Errorf("secret %s: file is empty", ref)
		}
		return Secret{ref: ref, value: b}, nil
	default:
		return Secret{}, fmt.Errorf("%w (got %q)", ErrSecretRef, kind+":…")
	}
}
