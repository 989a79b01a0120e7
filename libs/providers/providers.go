// Package providers is the one table of the webhook providers closedloop
// knows: each declared once with its signature scheme, where its event id
// and type are, its test deliveries, the headers worth keeping, the
// normalizer mapping that reads its payloads, and a sample event (the admin
// service's signed test event). The pipeline file's validation, the
// ingress's verifiers, the normalizer's mappings, the fuzz targets and the
// test events are all derived from it; tests in each of those places check
// that every provider here has its part, and that vectors cover it.
//
// Facts and assumptions are in docs/providers.md.
package providers

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SchemeKind is how a provider signs its webhooks.
type SchemeKind uint8

// Scheme kinds.
const (
	// Unsigned: nothing is signed; the secret ingest token in the URL is
	// the check (a source of such a provider may not configure secrets).
	Unsigned SchemeKind = iota
	// HMACScheme: an HMAC over a template of the body (HMAC below).
	HMACScheme
	// StandardWebhooks: standardwebhooks.com (Svix): webhook-id,
	// webhook-timestamp, webhook-signature "v1,<base64>", whsec_ keys.
	StandardWebhooks
	// Stripe: Stripe-Signature "t=<unix>,v1=<hex HMAC(secret, t.body)>".
	Stripe
	// Configured: the scheme is the source's own hmac block.
	Configured
)

// HMAC is an HMAC scheme: Header holds Prefix followed by the Encoding of
// HMAC-Algorithm(key, Signed), Signed a template over {body}, {id} (from
// IDHeader) and {timestamp} (from TimestampHeader in TimestampFormat, within
// Tolerance of now). The fields are those of the ingress's verifier, which
// converts it as is.
type HMAC struct {
	Header          string
	Algorithm       string // sha1, sha256, sha512
	Encoding        string // hex, base64
	Prefix          string
	Signed          string
	TimestampHeader string
	TimestampFormat string // TimestampUnix (default), TimestampRFC3339
	IDHeader        string
	Tolerance       time.Duration
	SecretEncoding  string // raw, base64, whsec
}

// Timestamp formats of a signed timestamp header.
const (
	// TimestampUnix is unix seconds ("1700000000").
	TimestampUnix = "unix"
	// TimestampRFC3339 is ISO 8601 / RFC 3339 ("2024-04-17T17:18:10Z").
	TimestampRFC3339 = "rfc3339"
)

// FormatTimestamp writes t as format says.
func FormatTimestamp(format string, t time.Time) string {
	if format == TimestampRFC3339 {
		return t.UTC().Format(time.RFC3339)
	}
	return strconv.FormatInt(t.Unix(), 10)
}

// ParseTimestamp reads a timestamp written in format.
func ParseTimestamp(format, s string) (time.Time, error) {
	if format == TimestampRFC3339 {
		return time.Parse(time.RFC3339, s)
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(sec, 0), nil
}

// FieldRef names where a value is: a request header (tried first) or a
// dotted path into the JSON body.
type FieldRef struct{ Header, Path string }

// Provider is one provider.
type Provider struct {
	// Name is the pipeline file's provider: value.
	Name string
	// Title is how people write it.
	Title  string
	Scheme SchemeKind
	// HMAC is the scheme of an HMACScheme provider.
	HMAC HMAC
	// ID and Type are where the event id and type are (no ID: the id is
	// derived from the source and body).
	ID, Type FieldRef
	// TestTypes are event types that mark a test delivery.
	TestTypes []string
	// KeepHeaders are non-secret headers worth keeping with the event.
	KeepHeaders []string
	// Mapping names the normalizer mapping of its payloads.
	Mapping string
	// Sample builds a realistic event of this provider with event id id at
	// now: the headers it carries besides the signature, and the body. The
	// admin service signs and sends it as a test event.
	Sample func(id string, now time.Time) (http.Header, []byte)
}

// Signs reports whether the provider signs its webhooks (its sources then
// need at least one secret).
func (p Provider) Signs() bool { return p.Scheme != Unsigned }

// Configurable reports whether the scheme comes from the source's own
// configuration rather than from this table.
func (p Provider) Configurable() bool { return p.Scheme == Configured }

// Mappings the normalizer has.
const (
	MapDelighted    = "delighted"
	MapDelightLoop  = "delightloop"
	MapChatToSurvey = "chattosurvey"
	MapFeedBackPro  = "feedbackpro"
	MapTypeform     = "typeform"
	MapZendesk      = "zendesk"
	MapFreshdesk    = "freshdesk"
	// MapGeneric keeps any JSON body as an engagement event.
	MapGeneric = "generic"
)

// TestEventType is the event type of closedloop's test events for the
// providers whose webhooks carry no id the test could be recognised by
// (DelightLoop): its TestTypes list it.
const TestEventType = "closedloop.test"

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func iso(t time.Time) string { return t.UTC().Format(time.RFC3339) }

var all = []Provider{
	{
		Name: "delighted", Title: "Delighted", Scheme: HMACScheme,
		HMAC: HMAC{Header: "X-Delighted-Webhook-Signature", Algorithm: "sha256", Encoding: "hex", Prefix: "sha256="},
		ID:   FieldRef{Path: "event_id"}, Type: FieldRef{Path: "event_type"},
		Mapping: MapDelighted,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			return nil, mustJSON(map[string]any{"event_type": "survey_response.created", "event_id": id, "event_data": map[string]any{
				"id": id, "survey_type": "nps", "score": 10, "comment": "closedloop test event", "created_at": now.Unix(), "updated_at": now.Unix(),
				"person": map[string]any{"id": "closedloop-test", "email": "test@closedloop.invalid", "name": "closedloop test"},
			}})
		},
	},
	{
		Name: "delightloop", Title: "DelightLoop", Scheme: HMACScheme,
		HMAC:        HMAC{Header: "X-DelightLoop-Signature", Algorithm: "sha256", Encoding: "hex"},
		Type:        FieldRef{Header: "X-DelightLoop-Event", Path: "event"},
		TestTypes:   []string{TestEventType},
		KeepHeaders: []string{"X-DelightLoop-Event", "X-DelightLoop-Timestamp"},
		Mapping:     MapDelightLoop,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			// No event id in DelightLoop's webhooks: the test is known by its type.
			h := http.Header{"X-Delightloop-Event": {TestEventType}, "X-Delightloop-Timestamp": {strconv.FormatInt(now.Unix(), 10)}}
			return h, mustJSON(map[string]any{"event": TestEventType, "timestamp": iso(now), "data": map[string]any{"recipientId": id, "email": "test@closedloop.invalid"}})
		},
	},
	{
		Name: "chattosurvey", Title: "ChatToSurvey", Scheme: Unsigned,
		ID:          FieldRef{Header: "X-Webhook-ID", Path: "id"},
		Type:        FieldRef{Header: "X-Webhook-Event", Path: "event"},
		TestTypes:   []string{"test.webhook"},
		KeepHeaders: []string{"X-Webhook-ID", "X-Webhook-Event", "X-Webhook-Timestamp"},
		Mapping:     MapChatToSurvey,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			h := http.Header{"X-Webhook-Id": {id}, "X-Webhook-Event": {"conversation.completed"}, "X-Webhook-Timestamp": {strconv.FormatInt(now.Unix(), 10)}}
			return h, mustJSON(map[string]any{"id": id, "event": "conversation.completed", "created_at": iso(now), "data": map[string]any{
				"conversation": map[string]any{"id": id}, "survey": map[string]any{"id": "closedloop-test", "name": "closedloop test"},
				"respondent": map[string]any{"id": "closedloop-test", "email": "test@closedloop.invalid"},
				"responses": []any{map[string]any{"question_id": "q1", "question": "How likely are you to recommend us?", "answer_type": "nps", "answer": "10"},
					map[string]any{"question_id": "q2", "question": "Why?", "answer_type": "text", "answer": "closedloop test event"}},
			}})
		},
	},
	{
		Name: "feedbackpro", Title: "FeedBackPro", Scheme: HMACScheme,
		HMAC: HMAC{Header: "X-FeedbackPro-Signature", Algorithm: "sha256", Encoding: "hex"},
		ID:   FieldRef{Path: "id"}, Type: FieldRef{Path: "event"},
		TestTypes: []string{"test", "test_event"},
		Mapping:   MapFeedBackPro,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			return nil, mustJSON(map[string]any{"event": "rating_submitted", "id": id, "timestamp": iso(now),
				"data": map[string]any{"score": 5, "customer_id": "closedloop-test", "email": "test@closedloop.invalid"}})
		},
	},
	{
		Name: "standardwebhooks", Title: "Standard Webhooks", Scheme: StandardWebhooks,
		ID: FieldRef{Header: "webhook-id"}, Type: FieldRef{Path: "type"},
		KeepHeaders: []string{"webhook-id", "webhook-timestamp"},
		Mapping:     MapGeneric,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			return nil, mustJSON(map[string]any{"type": "closedloop.test", "timestamp": iso(now), "data": map[string]any{"id": id}})
		},
	},
	{
		Name: "typeform", Title: "Typeform", Scheme: HMACScheme,
		HMAC: HMAC{Header: "Typeform-Signature", Algorithm: "sha256", Encoding: "base64", Prefix: "sha256="},
		ID:   FieldRef{Path: "event_id"}, Type: FieldRef{Path: "event_type"},
		Mapping: MapTypeform,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			return nil, mustJSON(map[string]any{"event_id": id, "event_type": "form_response", "form_response": map[string]any{
				"form_id": "closedloop-test", "token": id, "landed_at": iso(now.Add(-time.Minute)), "submitted_at": iso(now),
				"hidden": map[string]any{"email": "test@closedloop.invalid", "name": "closedloop test"},
				"definition": map[string]any{"id": "closedloop-test", "title": "closedloop test", "fields": []any{
					map[string]any{"id": "nps", "ref": "nps", "type": "opinion_scale", "title": "How likely are you to recommend us?", "properties": map[string]any{"steps": 11, "start_at_one": false}},
					map[string]any{"id": "why", "ref": "why", "type": "long_text", "title": "Why?"}}},
				"answers": []any{
					map[string]any{"type": "number", "number": 10, "field": map[string]any{"id": "nps", "ref": "nps", "type": "opinion_scale"}},
					map[string]any{"type": "text", "text": "closedloop test event", "field": map[string]any{"id": "why", "ref": "why", "type": "long_text"}}},
			}})
		},
	},
	{
		Name: "github", Title: "GitHub", Scheme: HMACScheme,
		HMAC: HMAC{Header: "X-Hub-Signature-256", Algorithm: "sha256", Encoding: "hex", Prefix: "sha256="},
		ID:   FieldRef{Header: "X-GitHub-Delivery"}, Type: FieldRef{Header: "X-GitHub-Event"},
		TestTypes:   []string{"ping"},
		KeepHeaders: []string{"X-GitHub-Delivery", "X-GitHub-Event"},
		Mapping:     MapGeneric,
		Sample: func(id string, _ time.Time) (http.Header, []byte) {
			return http.Header{"X-Github-Delivery": {id}, "X-Github-Event": {"ping"}}, mustJSON(map[string]any{"zen": "closedloop test event", "hook_id": 1})
		},
	},
	{
		Name: "stripe", Title: "Stripe", Scheme: Stripe,
		ID: FieldRef{Path: "id"}, Type: FieldRef{Path: "type"},
		Mapping: MapGeneric,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			return nil, mustJSON(map[string]any{"id": id, "object": "event", "type": "closedloop.test", "created": now.Unix(), "data": map[string]any{"object": map[string]any{"id": id}}})
		},
	},
	{
		// Zendesk's webhooks (event subscriptions such as
		// zen:event-type:ticket.status_changed): the ticket follow-ups of
		// the responses the Zendesk destination opened tickets for.
		Name: "zendesk", Title: "Zendesk", Scheme: HMACScheme,
		HMAC: HMAC{Header: "X-Zendesk-Webhook-Signature", Algorithm: "sha256", Encoding: "base64", Signed: "{timestamp}{body}",
			TimestampHeader: "X-Zendesk-Webhook-Signature-Timestamp", TimestampFormat: TimestampRFC3339},
		ID: FieldRef{Path: "id"}, Type: FieldRef{Path: "type"},
		KeepHeaders: []string{"X-Zendesk-Webhook-Id", "X-Zendesk-Webhook-Invocation-Id", "X-Zendesk-Account-Id"},
		Mapping:     MapZendesk,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			return nil, mustJSON(map[string]any{"type": "zen:event-type:ticket.status_changed", "account_id": 1, "id": id, "time": iso(now),
				"zendesk_event_version": "2022-11-06", "subject": "zen:ticket:1",
				"detail": map[string]any{"id": "1", "external_id": "closedloop-test/response/" + id, "status": "SOLVED", "subject": "closedloop test event",
					"created_at": iso(now.Add(-time.Hour)), "updated_at": iso(now), "tags": []string{"closedloop"}},
				"event": map[string]any{"current": "SOLVED", "previous": "OPEN"}})
		},
	},
	{
		// Freshdesk's automation webhooks: the body is what the rule's
		// admin writes (docs/destinations.md gives the template this
		// mapping reads); nothing is signed, the ingest token in the URL is
		// the check, and there is no event id (it is derived from the body).
		Name: "freshdesk", Title: "Freshdesk", Scheme: Unsigned,
		Type:      FieldRef{Path: "event"},
		TestTypes: []string{TestEventType},
		Mapping:   MapFreshdesk,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			return nil, mustJSON(map[string]any{"event": TestEventType, "ticket_id": "1", "ticket_status": "Resolved",
				"closedloop_response": "closedloop-test/response/" + id, "ticket_created_at": iso(now.Add(-time.Hour)), "time": iso(now)})
		},
	},
	{
		// The generic scheme: the source's hmac block says how it signs.
		Name: "hmac", Title: "any HMAC-signed webhook", Scheme: Configured,
		Mapping: MapGeneric,
		Sample: func(id string, now time.Time) (http.Header, []byte) {
			return SampleAt(id, now, FieldRef{Path: "event_id"}, FieldRef{Path: "event_type"})
		},
	},
}

// SampleAt is the test event of a source whose configuration says where its
// event id and type are (a Configured provider's): the id and the type
// "closedloop.test" are put there — in a header, or at the dotted path of
// the body.
func SampleAt(id string, now time.Time, idRef, typeRef FieldRef) (http.Header, []byte) {
	h := http.Header{}
	body := map[string]any{"occurred_at": iso(now)}
	put := func(ref FieldRef, v string) {
		if ref.Header != "" {
			h.Set(ref.Header, v)
			return
		}
		if ref.Path == "" {
			return
		}
		parts := strings.Split(ref.Path, ".")
		m := body
		for _, k := range parts[:len(parts)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	put(idRef, id)
	put(typeRef, TestEventType)
	return h, mustJSON(body)
}

var byName = func() map[string]Provider {
	m := make(map[string]Provider, len(all))
	for _, p := range all {
		if _, dup := m[p.Name]; dup {
			panic("providers: " + p.Name + " declared twice")
		}
		m[p.Name] = p
	}
	return m
}()

// Get returns the provider of a name.
func Get(name string) (Provider, bool) {
	p, ok := byName[name]
	return p, ok
}

// All returns every provider, in declaration order.
func All() []Provider { return append([]Provider(nil), all...) }

// Names returns every provider name, sorted.
func Names() []string {
	out := make([]string, 0, len(all))
	for _, p := range all {
		out = append(out, p.Name)
	}
	sort.Strings(out)
	return out
}
