package ingest

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/closedloop/closedloop/services/ingress/internal/verify"
)

// rawRecord is the RawWebhook the ingress stores for an accepted webhook.
// appendProto encodes it in the protobuf wire format of
// closedloop.feedback.v1.RawWebhook directly from the request, without
// building the message and its header map first: proto.Marshal walked the
// map by reflection and was ~7 of the ~80 allocations of a request. The test
// TestRawRecordEncodesTheRawWebhookMessage decodes its output with the
// generated code and compares it with the message built field by field.
type rawRecord struct {
	eventID, source, provider, eventType, instance string
	received                                       time.Time
	body                                           []byte
	test                                           bool
	header                                         http.Header
	kept                                           []keptHeader
}

// keptHeader is a request header copied into the record: its canonical
// name (to look it up) and the lower-case name it is stored under.
type keptHeader struct{ canonical, lower string }

// keptHeadersOf lists the headers kept for a provider: the base ones, then
// the provider's, each once.
func keptHeadersOf(provider []string) []keptHeader {
	names := canonicalOnce(baseHeaders, provider)
	out := make([]keptHeader, len(names))
	for i, c := range names {
		out[i] = keptHeader{canonical: c, lower: strings.ToLower(c)}
	}
	return out
}

// readHeaders are the headers a provider's requests are read for (copied
// out of a request: requestHeader): the base ones kept for every provider,
// then the provider's (verify.Provider.Headers), each once.
func readHeaders(p verify.Provider) []string { return canonicalOnce(baseHeaders, p.Headers()) }

// canonicalOnce lists the header names of the lists in canonical form, in
// order, each once.
func canonicalOnce(lists ...[]string) []string {
	var out []string
	for _, list := range lists {
		for _, n := range list {
			if c := textproto.CanonicalMIMEHeaderKey(n); !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// keptValue is the value stored for a header: the first one, at most
// maxKeptHeader bytes of valid UTF-8; "" means not stored.
func keptValue(h http.Header, canonical string) string {
	vs := h[canonical]
	if len(vs) == 0 {
		return ""
	}
	v := vs[0]
	if len(v) > maxKeptHeader {
		v = strings.ToValidUTF8(v[:maxKeptHeader], "")
	}
	return v
}

// RawWebhook field numbers (proto/closedloop/feedback/v1/raw_webhook.proto).
const (
	fieldEventID         = 1
	fieldSource          = 2
	fieldProvider        = 3
	fieldEventType       = 4
	fieldReceivedAt      = 5
	fieldBody            = 6
	fieldHeaders         = 7
	fieldTest            = 8
	fieldIngressInstance = 10
)

// size is an upper bound of the encoded size, to allocate once.
func (r *rawRecord) size() int {
	n := 4*10 + len(r.eventID) + len(r.source) + len(r.provider) + len(r.eventType) + len(r.instance) +
		24 + 10 + len(r.body) + 2
	for _, k := range r.kept {
		n += 3*10 + len(k.lower) + maxKeptHeader
	}
	return n
}

func (r *rawRecord) appendProto(b []byte) []byte {
	str := func(b []byte, num protowire.Number, s string) []byte {
		if s == "" {
			return b
		}
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	b = str(b, fieldEventID, r.eventID)
	b = str(b, fieldSource, r.source)
	b = str(b, fieldProvider, r.provider)
	b = str(b, fieldEventType, r.eventType)
	// google.protobuf.Timestamp{seconds = 1, nanos = 2}
	secs, nanos := uint64(r.received.Unix()), uint64(r.received.Nanosecond())
	tsLen := 0
	if secs != 0 {
		tsLen += 1 + protowire.SizeVarint(secs)
	}
	if nanos != 0 {
		tsLen += 1 + protowire.SizeVarint(nanos)
	}
	b = protowire.AppendTag(b, fieldReceivedAt, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(tsLen))
	if secs != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, secs)
	}
	if nanos != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, nanos)
	}
	if len(r.body) > 0 {
		b = protowire.AppendTag(b, fieldBody, protowire.BytesType)
		b = protowire.AppendBytes(b, r.body)
	}
	for _, k := range r.kept {
		v := keptValue(r.header, k.canonical)
		if v == "" {
			continue
		}
		// A map entry is a message {key = 1, value = 2}.
		entry := 1 + protowire.SizeBytes(len(k.lower)) + 1 + protowire.SizeBytes(len(v))
		b = protowire.AppendTag(b, fieldHeaders, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entry))
		b = str(b, 1, k.lower)
		b = str(b, 2, v)
	}
	if r.test {
		b = protowire.AppendTag(b, fieldTest, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return str(b, fieldIngressInstance, r.instance)
}
