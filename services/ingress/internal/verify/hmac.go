package verify

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/providers"
)

// HMAC is the HMAC scheme of the provider table (providers.HMAC): Header
// holds Prefix followed by the Encoding of HMAC-Algorithm(key, Signed),
// where Signed is a template over {body}, {id} (from IDHeader) and
// {timestamp} (from TimestampHeader in TimestampFormat, within Tolerance of
// now).
type HMAC providers.HMAC

// Headers implements Scheme.
func (s HMAC) Headers() []string {
	var out []string
	for _, h := range []string{s.Header, s.TimestampHeader, s.IDHeader} {
		if h != "" {
			out = append(out, h)
		}
	}
	return out
}

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
	var sig [64]byte // the largest digest (sha512): decoded without an allocation
	got, err := decodeSig(sig[:0], s.Encoding, enc)
	if err != nil || len(got) != digestSize(s.Algorithm) {
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
	ok, err = matchesAny(s.Algorithm, s.SecretEncoding, secrets, signed, got)
	if err != nil {
		return err
	}
	if !ok {
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

// decodeSig appends the signature s, decoded, to dst.
func decodeSig(dst []byte, encoding, s string) ([]byte, error) {
	if encoding == "base64" {
		if b, err := base64.StdEncoding.AppendDecode(dst, []byte(s)); err == nil {
			return b, nil
		}
		return base64.RawURLEncoding.AppendDecode(dst, []byte(strings.TrimRight(s, "=")))
	}
	return hex.AppendDecode(dst, []byte(s))
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

// macs keeps, per secret, hash algorithm and secret encoding, the decoded
// key and a pool of keyed HMAC states: decoding the key and keying a new
// HMAC for every request were most of a verification's allocations. A
// secret is identified by its value's memory (secrets are immutable; a
// reload makes new ones), so looking one up allocates nothing; the cache is
// emptied if reloads ever fill it.
var macs struct {
	mu sync.RWMutex
	m  map[macKey]*macPool
}

type macKey struct {
	alg, encoding string
	value         *byte
	n             int
}

type macPool struct{ pool sync.Pool }

// macState is a keyed HMAC with room for its digest (a digest written into
// a stack array escaped through the hash.Hash interface: one allocation
// per request).
type macState struct {
	h   hash.Hash
	sum [64]byte // the largest digest, SHA-512's
}

func macFor(alg, encoding string, s config.Secret) (*macPool, error) {
	v := s.Reveal()
	k := macKey{alg: alg, encoding: encoding, value: unsafe.SliceData(v), n: len(v)}
	macs.mu.RLock()
	mp := macs.m[k]
	macs.mu.RUnlock()
	if mp != nil {
		return mp, nil
	}
	key, err := providers.Key(v, encoding)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", s.Ref(), err)
	}
	h := providers.HashOf(alg)
	mp = &macPool{}
	mp.pool.New = func() any { return &macState{h: hmac.New(h, key)} }
	macs.mu.Lock()
	if macs.m == nil || len(macs.m) > 4096 {
		macs.m = map[macKey]*macPool{}
	}
	macs.m[k] = mp
	macs.mu.Unlock()
	return mp, nil
}

// matchesAny computes the HMAC (alg) of msg under every secret (decoded
// by encoding) and compares it with every candidate signature in constant
// time, without stopping at a match; keyed HMAC states are pooled per
// secret.
func matchesAny(alg, encoding string, secrets []config.Secret, msg []byte, candidates ...[]byte) (bool, error) {
	ok := 0
	for _, s := range secrets {
		mp, err := macFor(alg, encoding, s)
		if err != nil {
			return false, err
		}
		st := mp.pool.Get().(*macState)
		st.h.Reset()
		st.h.Write(msg)
		sum := st.h.Sum(st.sum[:0])
		for _, c := range candidates {
			if hmac.Equal(sum, c) {
				ok = 1
			}
		}
		mp.pool.Put(st)
	}
	return ok == 1, nil
}

// digestSize is the digest length of an algorithm name (as HashOf).
func digestSize(alg string) int {
	switch alg {
	case "sha1":
		return 20
	case "sha512":
		return 64
	}
	return 32
}
