// Package mapping turns a provider's webhook body into a FeedbackEvent.
// A Mapper returns a *kafkaio.PermanentError (quarantine reason) for a body
// that is authentic but unusable; it never drops data it does not know:
// unknown event types become engagement events with their data flattened
// into properties.
package mapping

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"github.com/segmentio/encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/feedback"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/providers"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Quarantine reasons (the vocabulary is kafkaio's).
const (
	ReasonMalformedJSON     = kafkaio.ReasonMalformedJSON
	ReasonMissingID         = kafkaio.ReasonMissingID
	ReasonScoreOutOfScale   = kafkaio.ReasonScoreOutOfScale
	ReasonUnknownProvider   = kafkaio.ReasonUnknownProvider
	ReasonInvalidField      = kafkaio.ReasonInvalidField
	ReasonUndecodableRecord = kafkaio.ReasonUndecodableRecord
)

// Mapper maps one provider's payloads. The event it returns has the
// provider-specific fields set; Map fills in the envelope fields.
type Mapper interface {
	Map(raw *feedbackv1.RawWebhook) (*feedbackv1.FeedbackEvent, error)
}

// mappers are the mappings, by the name the provider table gives each
// provider (providers.Provider.Mapping): a test checks every provider has
// one and every one here is used.
var mappers = map[string]Mapper{
	providers.MapDelighted:    Delighted{},
	providers.MapDelightLoop:  DelightLoop{},
	providers.MapChatToSurvey: ChatToSurvey{},
	providers.MapFeedBackPro:  FeedBackPro{},
	providers.MapTypeform:     Typeform{},
	providers.MapZendesk:      Zendesk{},
	providers.MapFreshdesk:    Freshdesk{},
	providers.MapGeneric:      Generic{},
}

// ForProvider returns the mapper of a provider of the table. Providers
// without a mapping of their own (Standard Webhooks senders, GitHub,
// Stripe, generic HMAC sources) get Generic: an engagement event with the
// body's data kept.
func ForProvider(provider string) (Mapper, bool) {
	p, ok := providers.Get(provider)
	if !ok {
		return nil, false
	}
	m, ok := mappers[p.Mapping]
	return m, ok
}

// Map maps a RawWebhook with its provider's mapper and sets the envelope
// fields (ids, source, times, raw payload, test and replay flags).
func Map(raw *feedbackv1.RawWebhook, now time.Time) (*feedbackv1.FeedbackEvent, error) {
	m, ok := ForProvider(raw.Provider)
	if !ok {
		return nil, kafkaio.Permanentf(ReasonUnknownProvider, "no mapping for provider %q", raw.Provider)
	}
	ev, err := m.Map(raw)
	if err != nil {
		return nil, err
	}
	ev.EventId = raw.EventId
	ev.Source = raw.Source
	ev.Provider = raw.Provider
	ev.ReceivedAt = raw.ReceivedAt
	ev.NormalizedAt = timestamppb.New(now)
	ev.RawPayload = raw.Body
	// An operator's test event keeps its kind and meaning but is flagged,
	// so consumers can tell it apart (feedback.TestEventPrefix).
	ev.Test = ev.Test || raw.Test || strings.HasPrefix(raw.EventId, feedback.TestEventPrefix)
	ev.ReplayId = raw.ReplayId
	ev.Origin = raw.Origin
	if ev.Quality == nil {
		ev.Quality = &feedbackv1.Quality{}
	}
	sort.Strings(ev.Quality.CoercedFields)
	return ev, nil
}

// scale is a survey type's score range and whether it defines NPS segments.
type scale struct {
	min, max float64
	nps      bool
}

// Scales by survey type. NPS and eNPS are documented (0–10). The others are
// Delighted's product families whose webhook type strings and ranges are not
// documented: CSAT 1–5, CES 1–7 (the 7-point variant; a 5-point survey's
// scores still fit), five-star 1–5, smileys 1–3, PMF 1–3, thumbs 0–1.
// Assumption, to revisit when a provider documents them.
var scales = map[feedbackv1.SurveyType]scale{
	feedbackv1.SurveyType_SURVEY_TYPE_NPS:       {0, 10, true},
	feedbackv1.SurveyType_SURVEY_TYPE_ENPS:      {0, 10, true},
	feedbackv1.SurveyType_SURVEY_TYPE_CSAT:      {1, 5, false},
	feedbackv1.SurveyType_SURVEY_TYPE_CES:       {1, 7, false},
	feedbackv1.SurveyType_SURVEY_TYPE_FIVE_STAR: {1, 5, false},
	feedbackv1.SurveyType_SURVEY_TYPE_SMILEYS:   {1, 3, false},
	feedbackv1.SurveyType_SURVEY_TYPE_PMF:       {1, 3, false},
	feedbackv1.SurveyType_SURVEY_TYPE_THUMBS:    {0, 1, false},
}

// Segment derives the NPS segment of a score on an NPS-type scale: 0–6
// detractor, 7–8 passive, 9–10 promoter. Other scales have none.
func Segment(st feedbackv1.SurveyType, score float64) feedbackv1.Segment {
	if sc, ok := scales[st]; !ok || !sc.nps {
		return feedbackv1.Segment_SEGMENT_UNSPECIFIED
	}
	switch {
	case score >= 9:
		return feedbackv1.Segment_SEGMENT_PROMOTER
	case score >= 7:
		return feedbackv1.Segment_SEGMENT_PASSIVE
	default:
		return feedbackv1.Segment_SEGMENT_DETRACTOR
	}
}

// scoreOnScale builds the Score of a survey type and checks the range.
func scoreOnScale(st feedbackv1.SurveyType, v float64) (*feedbackv1.Score, error) {
	sc, ok := scales[st]
	if !ok {
		return &feedbackv1.Score{Value: v}, nil
	}
	if v < sc.min || v > sc.max || math.IsNaN(v) {
		return nil, kafkaio.Permanentf(ReasonScoreOutOfScale, "score %v is outside the %s scale %v..%v", v, st, sc.min, sc.max)
	}
	return &feedbackv1.Score{Value: v, Min: sc.min, Max: sc.max}, nil
}

// decodeJSON decodes with numbers kept exact. Decoded strings, numbers and
// raw values share b's memory instead of each being copied (ZeroCopy: a
// tenth of a Delighted body's mapping time and 20 of its 68 allocations):
// b is a RawWebhook's body, which proto.Unmarshal gave its own memory and
// nothing writes to, so a string of the event can keep it alive but
// never sees it change.
func decodeJSON(b []byte, v any) error {
	rest, err := json.Parse(b, v, json.UseNumber|json.ZeroCopy)
	if err != nil {
		return err
	}
	if rest = bytes.TrimSpace(rest); len(rest) != 0 {
		return fmt.Errorf("invalid character %q after top-level value", rest[0])
	}
	return nil
}

// coercer records fields whose type had to be converted.
type coercer struct{ fields []string }

func (c *coercer) mark(field string) { c.fields = append(c.fields, field) }

// number reads a JSON number or a numeric string (coerced).
func (c *coercer) number(field string, raw json.RawMessage) (float64, bool, error) {
	if isNull(raw) {
		return 0, false, nil
	}
	var n json.Number
	if !isString(raw) && decodeJSON(raw, &n) == nil {
		f, err := n.Float64()
		return f, err == nil, err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, false, kafkaio.Permanentf(ReasonInvalidField, "%s is neither a number nor a numeric string", field)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false, kafkaio.Permanentf(ReasonInvalidField, "%s %q is not numeric", field, s)
	}
	c.mark(field)
	return f, true, nil
}

// isoTime reads a time a provider documents as ISO 8601 / RFC 3339 (not a
// coercion); unix seconds in its place are coerced and flagged.
func (c *coercer) isoTime(field string, raw json.RawMessage) (*timestamppb.Timestamp, error) {
	if isString(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s)); err == nil {
				return timestamppb.New(t.UTC()), nil
			}
		}
	}
	return c.time(field, raw)
}

// time reads unix seconds (number), or a numeric string or ISO-8601/RFC 3339
// string (both coerced).
func (c *coercer) time(field string, raw json.RawMessage) (*timestamppb.Timestamp, error) {
	if isNull(raw) {
		return nil, nil
	}
	var n json.Number
	if !isString(raw) && decodeJSON(raw, &n) == nil {
		return unixSeconds(field, string(n))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, kafkaio.Permanentf(ReasonInvalidField, "%s is neither unix seconds nor a time string", field)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	c.mark(field)
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return unixSeconds(field, s)
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return timestamppb.New(t.UTC()), nil
		}
	}
	return nil, kafkaio.Permanentf(ReasonInvalidField, "%s %q is not an ISO-8601 time", field, s)
}

func unixSeconds(field, s string) (*timestamppb.Timestamp, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f > 1e11 {
		return nil, kafkaio.Permanentf(ReasonInvalidField, "%s %q is not a unix time in seconds", field, s)
	}
	sec, frac := math.Modf(f)
	return timestamppb.New(time.Unix(int64(sec), int64(frac*1e9)).UTC()), nil
}

// isString reports whether raw is a JSON string (json.Number would accept
// a quoted number, hiding a coercion).
func isString(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '"'
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// Flatten turns nested JSON into dotted keys under prefix: objects by key,
// arrays by index ("tags.0"). null stays null; numbers keep their value
// (one too large for a double keeps its text); an empty object or array
// under a key is kept as such. It walks the bytes once, without building a
// generic tree.
func Flatten(prefix string, raw json.RawMessage, out map[string]*structpb.Value) error {
	f := flattener{b: raw, out: out, key: append(make([]byte, 0, 64), prefix...)}
	if err := f.value(0); err != nil {
		return err
	}
	if f.ws(); f.i != len(f.b) {
		return fmt.Errorf("invalid character %q after top-level value", f.b[f.i])
	}
	return nil
}

type flattener struct {
	b   []byte
	i   int
	key []byte
	out map[string]*structpb.Value
}

const maxFlattenDepth = 64

var errFlattenSyntax = errors.New("malformed JSON")

func (f *flattener) ws() {
	for f.i < len(f.b) && (f.b[f.i] == ' ' || f.b[f.i] == '\t' || f.b[f.i] == '\n' || f.b[f.i] == '\r') {
		f.i++
	}
}

func (f *flattener) set(v *structpb.Value) { f.out[string(f.key)] = v }

// push appends ".k" (or "k" at the top) to the key and returns the length
// to restore.
func (f *flattener) push(k []byte) int {
	n := len(f.key)
	if n > 0 {
		f.key = append(f.key, '.')
	}
	f.key = append(f.key, k...)
	return n
}

func (f *flattener) value(depth int) error {
	if depth > maxFlattenDepth {
		return fmt.Errorf("JSON nested deeper than %d levels", maxFlattenDepth)
	}
	f.ws()
	if f.i >= len(f.b) {
		return errFlattenSyntax
	}
	switch c := f.b[f.i]; {
	case c == '{':
		f.i++
		f.ws()
		if f.i < len(f.b) && f.b[f.i] == '}' {
			f.i++
			if len(f.key) > 0 {
				f.set(structpb.NewStructValue(&structpb.Struct{}))
			}
			return nil
		}
		for {
			f.ws()
			k, err := f.str()
			if err != nil {
				return err
			}
			f.ws()
			if f.i >= len(f.b) || f.b[f.i] != ':' {
				return errFlattenSyntax
			}
			f.i++
			n := f.push(k)
			if err := f.value(depth + 1); err != nil {
				return err
			}
			f.key = f.key[:n]
			f.ws()
			if f.i >= len(f.b) {
				return errFlattenSyntax
			}
			if f.b[f.i] == '}' {
				f.i++
				return nil
			}
			if f.b[f.i] != ',' {
				return errFlattenSyntax
			}
			f.i++
		}
	case c == '[':
		f.i++
		f.ws()
		if f.i < len(f.b) && f.b[f.i] == ']' {
			f.i++
			if len(f.key) > 0 {
				f.set(structpb.NewListValue(&structpb.ListValue{}))
			}
			return nil
		}
		var idx [20]byte
		for n := 0; ; n++ {
			m := f.push(strconv.AppendInt(idx[:0], int64(n), 10))
			if err := f.value(depth + 1); err != nil {
				return err
			}
			f.key = f.key[:m]
			f.ws()
			if f.i >= len(f.b) {
				return errFlattenSyntax
			}
			if f.b[f.i] == ']' {
				f.i++
				return nil
			}
			if f.b[f.i] != ',' {
				return errFlattenSyntax
			}
			f.i++
		}
	case c == '"':
		s, err := f.str()
		if err != nil {
			return err
		}
		f.set(structpb.NewStringValue(string(s)))
		return nil
	default:
		start := f.i
		for f.i < len(f.b) && !strings.ContainsRune(",}] \t\n\r", rune(f.b[f.i])) {
			f.i++
		}
		lit := f.b[start:f.i]
		switch string(lit) {
		case "null":
			f.set(structpb.NewNullValue())
		case "true":
			f.set(structpb.NewBoolValue(true))
		case "false":
			f.set(structpb.NewBoolValue(false))
		default:
			if !validNumber(lit) {
				return fmt.Errorf("invalid JSON literal %q", lit)
			}
			if v, err := strconv.ParseFloat(string(lit), 64); err == nil {
				f.set(structpb.NewNumberValue(v))
			} else {
				f.set(structpb.NewStringValue(string(lit)))
			}
		}
		return nil
	}
}

// str reads a JSON string and returns its text (decoded when it has escapes
// or invalid UTF-8, as encoding/json decodes it).
func (f *flattener) str() ([]byte, error) {
	if f.i >= len(f.b) || f.b[f.i] != '"' {
		return nil, errFlattenSyntax
	}
	start := f.i
	plain := true
	for f.i++; f.i < len(f.b); f.i++ {
		switch c := f.b[f.i]; {
		case c == '\\':
			plain = false
			f.i++
		case c == '"':
			f.i++
			quoted := f.b[start:f.i]
			inner := quoted[1 : len(quoted)-1]
			if plain && utf8.Valid(inner) {
				return inner, nil
			}
			var s string
			if err := stdjson.Unmarshal(quoted, &s); err != nil {
				return nil, err
			}
			return []byte(s), nil
		case c < 0x20:
			return nil, errFlattenSyntax
		}
	}
	return nil, errFlattenSyntax
}

// validNumber reports whether b is a JSON number.
func validNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i - s
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}
