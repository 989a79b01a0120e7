// Package pbjson writes a protobuf message as the JSON protojson writes with
// UseProtoNames (field names as in the .proto, unpopulated fields left
// out), at a fraction of its cost: the sinks write every event as JSON
// (sink-warehouse's event column, sink-webhook's request bodies), and
// protojson was over a quarter of sink-warehouse's CPU at 1,000 events/s.
//
// The messages of closedloop.feedback.v1 (the events) are written by
// generated encoders (generated.go, written by package internal/gen: go
// generate), which read the Go fields directly: 6–7 µs for a typical event
// where the reflective walk takes 20–23 and protojson 31–35
// (BenchmarkFeedbackEvent). Any other message is walked by reflection in
// field order, with no sorting of fields, no indentation state and one
// output buffer; the generated encoders write the same bytes as the walk
// (tested on every message of the package, at the edges and by fuzzing).
// Map keys are sorted as protojson sorts them. The well-known types Timestamp,
// Duration, Struct, Value, ListValue, Empty and the wrappers get their JSON
// forms; a message holding an Any or a FieldMask, or one that has
// extensions, is written by protojson itself. What protojson rejects
// (invalid UTF-8, a Timestamp out of range, a Value with no kind or a
// number that is not finite) is rejected here too. The output is the same
// JSON value as protojson's: the tests compare them on every event the
// project's mappings produce, on messages with every field set, and by
// fuzzing.
package pbjson

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Marshal returns m as JSON.
func Marshal(m proto.Message) ([]byte, error) {
	return Append(make([]byte, 0, 1024), m)
}

//go:generate go run ./internal/gen/pbjsongen

// Append appends m as JSON to b. A message of closedloop.feedback.v1 is
// written by its generated encoder (generated.go), any other by the
// reflective walk; both write the same bytes.
func Append(b []byte, m proto.Message) ([]byte, error) {
	if out, ok, err := appendGenerated(b, m); ok {
		if err != nil {
			return b, err
		}
		return out, nil
	}
	out, err := appendMessage(b, m.ProtoReflect(), 0)
	if errors.Is(err, errUnsupported) {
		js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			return b, err
		}
		return append(b, js...), nil
	}
	if err != nil {
		return b, err
	}
	return out, nil
}

// errUnsupported sends a message to protojson.
var errUnsupported = errors.New("pbjson: left to protojson")

// maxDepth is protojson's (and proto's) recursion limit.
const maxDepth = 10000

var errDepth = errors.New("pbjson: exceeded max recursion depth")

// Well-known types' full names.
const (
	timestampName = "google.protobuf.Timestamp"
	durationName  = "google.protobuf.Duration"
	structName    = "google.protobuf.Struct"
	valueName     = "google.protobuf.Value"
	listName      = "google.protobuf.ListValue"
	emptyName     = "google.protobuf.Empty"
	nullName      = "google.protobuf.NullValue"
)

func appendMessage(b []byte, m protoreflect.Message, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errDepth
	}
	d := m.Descriptor()
	if d.FullName().Parent() == "google.protobuf" {
		if out, ok, err := appendWellKnown(b, m, depth); ok {
			return out, err
		}
	}
	if d.ExtensionRanges().Len() > 0 {
		return b, errUnsupported
	}
	b = append(b, '{')
	first := true
	fields := d.Fields()
	var err error
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, fd.TextName()...) // a field name needs no escaping
		b = append(b, '"', ':')
		if b, err = appendField(b, fd, m.Get(fd), depth); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendField(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value, depth int) ([]byte, error) {
	switch {
	case fd.IsList():
		l := v.List()
		b = append(b, '[')
		var err error
		for i := range l.Len() {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendSingular(b, fd, l.Get(i), depth); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case fd.IsMap():
		return appendMap(b, fd, v.Map(), depth)
	}
	return appendSingular(b, fd, v, depth)
}

func appendSingular(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value, depth int) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendInt(b, v.Int(), 10), '"'), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendUint(b, v.Uint(), 10), '"'), nil
	case protoreflect.FloatKind:
		return appendFloat(b, v.Float(), 32), nil
	case protoreflect.DoubleKind:
		return appendFloat(b, v.Float(), 64), nil
	case protoreflect.StringKind:
		return appendString(b, v.String())
	case protoreflect.BytesKind:
		return appendBytes(b, v.Bytes()), nil
	case protoreflect.EnumKind:
		return appendEnum(b, fd.Enum(), v.Enum()), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendMessage(b, v.Message(), depth+1)
	}
	return b, fmt.Errorf("pbjson: %v has an unknown kind %v", fd.FullName(), fd.Kind())
}

// appendBytes writes bytes as standard base64 in a string.
func appendBytes(b, v []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// appendEnum writes an enum value's name, or its number when the enum has
// no value of that number; a NullValue is null.
func appendEnum(b []byte, ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) []byte {
	if ed.FullName() == nullName {
		return append(b, "null"...)
	}
	if ev := ed.Values().ByNumber(n); ev != nil {
		b = append(b, '"')
		b = append(b, ev.Name()...)
		return append(b, '"')
	}
	return strconv.AppendInt(b, int64(n), 10)
}

// key starts a field of a generated encoder's object, whose first field
// starts at start: a comma before every field but the first, then the
// quoted name and the colon.
func key(b []byte, start int, name string) []byte {
	if len(b) > start {
		b = append(b, ',')
	}
	return append(b, name...)
}

// sortedKeys returns a map's keys in protojson's order for numbers and
// strings (bool keys are written in their own order by the generated code).
func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// The well-known types the generated encoders write without reflection,
// as appendMessage writes them (depths and nil messages included: a nil
// Timestamp reads as the epoch, a nil Struct or ListValue as empty, a
// nil Value, or one with no kind, is an error).

func appendTimestampPB(b []byte, ts *timestamppb.Timestamp) ([]byte, error) {
	return appendTimestamp(b, ts.GetSeconds(), int64(ts.GetNanos()))
}

func appendStructPB(b []byte, s *structpb.Struct, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errDepth
	}
	b = append(b, '{')
	var err error
	for i, k := range sortedKeys(s.GetFields()) {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendString(b, k); err != nil {
			return b, err
		}
		if b, err = appendValuePB(append(b, ':'), s.Fields[k], depth+1); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendListPB(b []byte, l *structpb.ListValue, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errDepth
	}
	b = append(b, '[')
	var err error
	for i, v := range l.GetValues() {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendValuePB(b, v, depth+1); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

func appendValuePB(b []byte, v *structpb.Value, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errDepth
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return append(b, "null"...), nil
	case *structpb.Value_NumberValue:
		if err := finite(k.NumberValue); err != nil {
			return b, err
		}
		return appendFloat(b, k.NumberValue, 64), nil
	case *structpb.Value_StringValue:
		return appendString(b, k.StringValue)
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(b, k.BoolValue), nil
	case *structpb.Value_StructValue:
		return appendStructPB(b, k.StructValue, depth+1)
	case *structpb.Value_ListValue:
		return appendListPB(b, k.ListValue, depth+1)
	}
	return b, errNoKind
}

// A Value with no kind, or a number that is not finite, has no JSON form.
var errNoKind = fmt.Errorf("pbjson: %s: none of the oneof fields is set", valueName)

func finite(f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("pbjson: %s: invalid number %v", valueName, f)
	}
	return nil
}

// entry is one map entry.
type entry struct {
	k protoreflect.MapKey
	v protoreflect.Value
}

// appendMap writes a map's entries ordered by key: false before true,
// numbers by value, strings by their bytes (protojson's order).
func appendMap(b []byte, fd protoreflect.FieldDescriptor, m protoreflect.Map, depth int) ([]byte, error) {
	entries := make([]entry, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		entries = append(entries, entry{k, v})
		return true
	})
	keyKind := fd.MapKey().Kind()
	switch keyKind {
	case protoreflect.BoolKind:
		slices.SortFunc(entries, func(x, y entry) int {
			return cmp.Compare(b2i(x.k.Bool()), b2i(y.k.Bool()))
		})
	case protoreflect.StringKind:
		slices.SortFunc(entries, func(x, y entry) int { return cmp.Compare(x.k.String(), y.k.String()) })
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		slices.SortFunc(entries, func(x, y entry) int { return cmp.Compare(x.k.Uint(), y.k.Uint()) })
	default: // signed integers
		slices.SortFunc(entries, func(x, y entry) int { return cmp.Compare(x.k.Int(), y.k.Int()) })
	}
	vfd := fd.MapValue()
	b = append(b, '{')
	var err error
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		if keyKind == protoreflect.StringKind {
			if b, err = appendString(b, e.k.String()); err != nil {
				return b, err
			}
		} else {
			b = append(b, '"')
			b = append(b, e.k.String()...) // the decimal or true/false
			b = append(b, '"')
		}
		b = append(b, ':')
		if b, err = appendSingular(b, vfd, e.v, depth); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

// appendWellKnown writes the well-known types that have a JSON form of
// their own; ok is false for any other message of the package (a
// descriptor, say), which is written as an ordinary message.
func appendWellKnown(b []byte, m protoreflect.Message, depth int) (out []byte, ok bool, err error) {
	d := m.Descriptor()
	fields := d.Fields()
	switch d.FullName() {
	case timestampName:
		out, err = appendTimestamp(b, m.Get(fields.ByNumber(1)).Int(), m.Get(fields.ByNumber(2)).Int())
	case durationName:
		out, err = appendDuration(b, m.Get(fields.ByNumber(1)).Int(), m.Get(fields.ByNumber(2)).Int())
	case structName:
		out, err = appendMap(b, fields.ByNumber(1), m.Get(fields.ByNumber(1)).Map(), depth)
	case listName:
		out, err = appendField(b, fields.ByNumber(1), m.Get(fields.ByNumber(1)), depth)
	case valueName:
		fd := m.WhichOneof(d.Oneofs().Get(0))
		if fd == nil {
			return b, true, errNoKind
		}
		v := m.Get(fd)
		if fd.Kind() == protoreflect.DoubleKind {
			if err := finite(v.Float()); err != nil {
				return b, true, err
			}
		}
		out, err = appendSingular(b, fd, v, depth)
	case emptyName:
		out = append(b, '{', '}')
	case "google.protobuf.BoolValue", "google.protobuf.Int32Value", "google.protobuf.Int64Value",
		"google.protobuf.UInt32Value", "google.protobuf.UInt64Value", "google.protobuf.FloatValue",
		"google.protobuf.DoubleValue", "google.protobuf.StringValue", "google.protobuf.BytesValue":
		fd := fields.ByNumber(1)
		out, err = appendSingular(b, fd, m.Get(fd), depth)
	case "google.protobuf.Any", "google.protobuf.FieldMask":
		err = errUnsupported
	default:
		return b, false, nil
	}
	return out, true, err
}

// Timestamp and Duration bounds (google/protobuf/timestamp.proto and
// duration.proto): 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z,
// and ±10,000 years.
const (
	minTimestamp = -62135596800
	maxTimestamp = 253402300799
	maxDuration  = 315576000000
	maxNanos     = 999999999
)

// appendTimestamp writes RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits.
func appendTimestamp(b []byte, secs, nanos int64) ([]byte, error) {
	if secs < minTimestamp || secs > maxTimestamp {
		return b, fmt.Errorf("pbjson: %s: seconds out of range %d", timestampName, secs)
	}
	if nanos < 0 || nanos > maxNanos {
		return b, fmt.Errorf("pbjson: %s: nanos out of range %d", timestampName, nanos)
	}
	b = append(b, '"')
	b = time.Unix(secs, 0).UTC().AppendFormat(b, "2006-01-02T15:04:05")
	b = appendNanos(b, nanos)
	return append(b, 'Z', '"'), nil
}

// appendDuration writes seconds with 0, 3, 6 or 9 fractional digits and "s".
func appendDuration(b []byte, secs, nanos int64) ([]byte, error) {
	if secs < -maxDuration || secs > maxDuration {
		return b, fmt.Errorf("pbjson: %s: seconds out of range %d", durationName, secs)
	}
	if nanos < -maxNanos || nanos > maxNanos {
		return b, fmt.Errorf("pbjson: %s: nanos out of range %d", durationName, nanos)
	}
	if (secs > 0 && nanos < 0) || (secs < 0 && nanos > 0) {
		return b, fmt.Errorf("pbjson: %s: signs of seconds and nanos do not match", durationName)
	}
	b = append(b, '"')
	if secs < 0 || nanos < 0 {
		b = append(b, '-')
		secs, nanos = -secs, -nanos
	}
	b = strconv.AppendInt(b, secs, 10)
	b = appendNanos(b, nanos)
	return append(b, 's', '"'), nil
}

// appendNanos writes a fraction of a second with 0, 3, 6 or 9 digits.
func appendNanos(b []byte, nanos int64) []byte {
	if nanos == 0 {
		return b
	}
	digits := 9
	for digits > 3 && nanos%1000 == 0 {
		nanos /= 1000
		digits -= 3
	}
	b = append(b, '.')
	s := strconv.AppendInt(make([]byte, 0, 9), nanos, 10)
	for range digits - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

// appendFloat writes a number as JSON numbers are written by protojson
// and encoding/json: the shortest decimal that reads back the same, in
// exponent form below 1e-6 and from 1e21, with a two-digit exponent at
// least; NaN and the infinities as strings.
func appendFloat(b []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// 1e-07 → 1e-7, as encoding/json writes it.
		if n := len(b); n-start >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendString writes s as a JSON string; s must be valid UTF-8.
func appendString(b []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return b, errors.New("pbjson: string field contains invalid UTF-8")
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
			continue // bytes of multi-byte characters too
		}
		b = AppendEscaped(append(b, s[start:i]...), c)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}

// AppendEscaped appends the JSON escape of an ASCII byte a JSON string
// cannot hold as it is (or one a writer chooses to escape, such as < > &
// for HTML-safe JSON): \" \\ \b \f \n \r \t, else \u00XX.
func AppendEscaped(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
}

const hex = "0123456789abcdef"
