package providers

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sign signs body as provider p does with secret (as configured: a whsec_
// key for Standard Webhooks, the raw string otherwise) and returns the
// headers to send: the sample's own plus the signature's. scheme is the
// source's hmac block for a Configured provider (ignored otherwise). id is
// the delivery id where the scheme carries one in a header.
func Sign(p Provider, scheme *HMAC, secret []byte, id string, body []byte, extra http.Header, now time.Time) (http.Header, error) {
	h := http.Header{"Content-Type": {"application/json"}}
	for k, vs := range extra {
		h[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	switch p.Scheme {
	case Unsigned:
		return h, nil
	case StandardWebhooks:
		key, err := Key(secret, "whsec")
		if err != nil {
			return nil, err
		}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac(sha256.New, key, []byte(id+"."+ts+"."), body)))
		return h, nil
	case Stripe:
		h.Set("Stripe-Signature", "t="+ts+",v1="+hex.EncodeToString(mac(sha256.New, secret, []byte(ts+"."), body)))
		return h, nil
	case Configured:
		if scheme == nil {
			return nil, fmt.Errorf("provider %s signs as its source's hmac block says: none given", p.Name)
		}
		return h, signHMAC(h, *scheme, secret, id, ts, body)
	}
	return h, signHMAC(h, p.HMAC, secret, id, ts, body)
}

func signHMAC(h http.Header, s HMAC, secret []byte, id, ts string, body []byte) error {
	key, err := Key(secret, s.SecretEncoding)
	if err != nil {
		return err
	}
	tmpl := s.Signed
	if tmpl == "" {
		tmpl = "{body}"
	}
	before, after, ok := strings.Cut(tmpl, "{body}")
	if !ok {
		return errors.New("the signed template has no {body}")
	}
	if s.TimestampFormat == TimestampRFC3339 {
		unix, _ := strconv.ParseInt(ts, 10, 64)
		ts = FormatTimestamp(TimestampRFC3339, time.Unix(unix, 0))
	}
	fill := strings.NewReplacer("{id}", id, "{timestamp}", ts)
	if strings.Contains(tmpl, "{timestamp}") {
		h.Set(s.TimestampHeader, ts)
	}
	if strings.Contains(tmpl, "{id}") {
		h.Set(s.IDHeader, id)
	}
	sum := mac(HashOf(s.Algorithm), key, []byte(fill.Replace(before)), body, []byte(fill.Replace(after)))
	enc := hex.EncodeToString(sum)
	if s.Encoding == "base64" {
		enc = base64.StdEncoding.EncodeToString(sum)
	}
	h.Set(s.Header, s.Prefix+enc)
	return nil
}

// Key is the HMAC key of a configured secret: the raw bytes, the base64
// decoding ("base64"), or the base64 after "whsec_" ("whsec").
func Key(secret []byte, encoding string) ([]byte, error) {
	switch encoding {
	case "base64":
		k, err := base64.StdEncoding.DecodeString(string(secret))
		if err != nil {
			return nil, errors.New("not base64")
		}
		return k, nil
	case "whsec":
		k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(string(secret), "whsec_"))
		if err != nil {
			return nil, errors.New("not whsec_ followed by base64")
		}
		return k, nil
	}
	return secret, nil
}

// HashOf is the hash of an algorithm name: sha1, sha512, else sha256.
func HashOf(alg string) func() hash.Hash {
	switch alg {
	case "sha1":
		return sha1.New
	case "sha512":
		return sha512.New
	}
	return sha256.New
}

func mac(h func() hash.Hash, key []byte, parts ...[]byte) []byte {
	m := hmac.New(h, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}
