package verify

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/providers"
)

// HMAC is the HMAC scheme of the provider table (providers.HMAC): Header
// holds Prefix followed by the Encoding of HMAC-Algorithm(key, Signed),
// where Signed is a template over {body}, {id} (from IDHeader) and
// {timestamp} (from TimestampHeader in TimestampFormat, within Tolerance of
// now).
type HMAC providers.HMAC

// Verify implements Scheme.
func (s HMAC) Verify(r Request, secrets []config.Secret) error {
	raw := strings.TrimSpace(r.Header.Get(s.Header))
	if raw == "" {
		return missing(s.Header)
	}
	enc, ok := strings.CutPrefix(raw, s.Prefix)
	if !ok {
		return bad(fmt.Sprintf("%s must start with %q", s.Header, s.Prefix))
	}
	h := providers.HashOf(s.Algorithm)
	got, err := decodeSig(s.Encoding, enc)
	if err != nil || len(got) != h().Size() {
		return bad(fmt.Sprintf("%s is not a %s-encoded %s digest", s.Header, s.Encoding, s.Algorithm))
	}
	signed := r.Body
	if s.Signed != "" && s.Signed != "{body}" {
		var ts, id string
		if strings.Contains(s.Signed, "{timestamp}") {
			ts = strings.TrimSpace(r.Header.Get(s.TimestampHeader))
			if err := checkTimestamp(s.TimestampHeader, s.TimestampFormat, ts, r.Now, s.tolerance()); err != nil {
				return err
			}
		}
		if strings.Contains(s.Signed, "{id}") {
			if id = strings.TrimSpace(r.Header.Get(s.IDHeader)); id == "" {
				return bad(s.IDHeader + " header is missing: it is part of the signed content")
			}
		}
		signed = expand(s.Signed, id, ts, r.Body)
	}
	keys, err := keysOf(secrets, s.SecretEncoding)
	if err != nil {
		return err
	}
	if !anyMatches(h, keys, signed, [][]byte{got}) {
		return bad("signature does not match the content with any active secret")
	}
	return nil
}

func (s HMAC) tolerance() time.Duration {
	if s.Tolerance > 0 {
		return s.Tolerance
	}
	return DefaultTolerance
}

func decodeSig(encoding, s string) ([]byte, error) {
	if encoding == "base64" {
		if b, err := base64.StdEncoding.DecodeString(s); err == nil {
			return b, nil
		}
		return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	}
	return hex.DecodeString(s)
}

// expand fills the signed-content template without copying the body twice.
func expand(tmpl, id, ts string, body []byte) []byte {
	out := make([]byte, 0, len(tmpl)+len(id)+len(ts)+len(body))
	for len(tmpl) > 0 {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			out = append(out, tmpl...)
			break
		}
		out = append(out, tmpl[:i]...)
		tmpl = tmpl[i:]
		switch {
		case strings.HasPrefix(tmpl, "{body}"):
			out, tmpl = append(out, body...), tmpl[len("{body}"):]
		case strings.HasPrefix(tmpl, "{id}"):
			out, tmpl = append(out, id...), tmpl[len("{id}"):]
		case strings.HasPrefix(tmpl, "{timestamp}"):
			out, tmpl = append(out, ts...), tmpl[len("{timestamp}"):]
		default:
			out, tmpl = append(out, '{'), tmpl[1:]
		}
	}
	return out
}

// checkTimestamp accepts a timestamp in format (unix seconds by default)
// within tol of now, either way.
func checkTimestamp(header, format, ts string, now time.Time, tol time.Duration) error {
	if ts == "" {
		return bad(header + " header is missing: the timestamp is part of the signed content")
	}
	at, err := providers.ParseTimestamp(format, ts)
	if err != nil {
		if format == providers.TimestampRFC3339 {
			return bad(header + " is not an RFC 3339 time")
		}
		return bad(header + " is not unix seconds")
	}
	if d := now.Sub(at); d > tol || d < -tol {
		return &Rejection{Reason: ReasonStaleTimestamp, Detail: fmt.Sprintf("timestamp is %s away from now; at most %s is accepted", d.Round(time.Second), tol)}
	}
	return nil
}

// keysOf turns the configured secrets into HMAC keys.
func keysOf(secrets []config.Secret, encoding string) ([][]byte, error) {
	keys := make([][]byte, 0, len(secrets))
	for _, s := range secrets {
		k, err := providers.Key(s.Reveal(), encoding)
		if err != nil {
			return nil, fmt.Errorf("secret %s: %w", s.Ref(), err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// anyMatches computes the HMAC of msg under every key and compares it with
// every candidate signature in constant time, without stopping at a match.
func anyMatches(h func() hash.Hash, keys [][]byte, msg []byte, candidates [][]byte) bool {
	ok := 0
	for _, k := range keys {
		m := hmac.New(h, k)
		m.Write(msg)
		sum := m.Sum(nil)
		for _, c := range candidates {
			if hmac.Equal(sum, c) {
				ok = 1
			}
		}
	}
	return ok == 1
}
