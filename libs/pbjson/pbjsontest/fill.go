// Package pbjsontest fills protobuf messages with random values for tests
// that compare encodings of the same message (libs/pbjson's encoders with
// protojson and with each other, the warehouse's document with pbjson).
package pbjsontest

import (
	"math"
	"math/rand/v2"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Fill sets every field of m (to depth), with values drawn from r: the
// edges of each kind (NaN and ±Inf, −0, the integers' limits, escapes and
// non-ASCII text, times at the ends of their range, an enum number that is
// no value of its enum); a list or map gets 0–3 entries, a real oneof a
// member or none.
func Fill(r *rand.Rand, m protoreflect.Message, depth int) {
	d := m.Descriptor()
	switch d.FullName() {
	case "google.protobuf.Any":
		a, _ := anypb.New(timestamppb.New(timestamppb.Now().AsTime()))
		proto.Merge(m.Interface(), a)
		return
	case "google.protobuf.FieldMask":
		proto.Merge(m.Interface(), &fieldmaskpb.FieldMask{Paths: []string{"a_b", "c"}})
		return
	case "google.protobuf.Timestamp":
		proto.Merge(m.Interface(), &timestamppb.Timestamp{Seconds: r.Int64N(253402300799+62135596800) - 62135596800, Nanos: nanos(r)})
		return
	case "google.protobuf.Duration":
		s, n := r.Int64N(315576000000), int64(nanos(r))
		if r.IntN(2) == 0 {
			s, n = -s, -n
		}
		proto.Merge(m.Interface(), &durationpb.Duration{Seconds: s, Nanos: int32(n)})
		return
	case "google.protobuf.Value":
		proto.Merge(m.Interface(), value(r, depth))
		return
	case "google.protobuf.Struct":
		proto.Merge(m.Interface(), value(r, depth).GetStructValue())
		return
	case "google.protobuf.ListValue":
		proto.Merge(m.Interface(), value(r, depth).GetListValue())
		return
	}
	fields := d.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && r.IntN(2) == 0 {
			continue
		}
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range r.IntN(3) {
				if fd.Kind() == protoreflect.MessageKind {
					if depth > 0 {
						v := l.NewElement()
						Fill(r, v.Message(), depth-1)
						l.Append(v)
					}
					continue
				}
				l.Append(scalar(r, fd))
			}
		case fd.IsMap():
			mm := m.Mutable(fd).Map()
			for range r.IntN(4) {
				k := scalar(r, fd.MapKey()).MapKey()
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					if depth > 0 {
						v := mm.NewValue()
						Fill(r, v.Message(), depth-1)
						mm.Set(k, v)
					}
					continue
				}
				mm.Set(k, scalar(r, fd.MapValue()))
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth > 0 {
				Fill(r, m.Mutable(fd).Message(), depth-1)
			}
		default:
			m.Set(fd, scalar(r, fd))
		}
	}
}

func nanos(r *rand.Rand) int32 {
	switch r.IntN(4) {
	case 0:
		return 0
	case 1:
		return int32(r.IntN(1000)) * 1e6
	case 2:
		return int32(r.IntN(1e6)) * 1e3
	}
	return int32(r.IntN(1e9))
}

var strs = []string{"", "plain", "quote \" backslash \\ slash /", "tab\tnewline\ncr\rbell\x07nul\x00del\x7f", "<html>&amp;",
	"non-ASCII: é ü 日本語 🙂", "\u2028\u2029", "\ufeffbom", strings.Repeat("long ", 100)}

var floats = []float64{0, 1, -1, 0.1, 1.5, 1e-7, 1.234e-7, 1e-6, 1e20, 1e21, 1.5e300, -2.5e-300, math.MaxFloat64, math.SmallestNonzeroFloat64,
	math.NaN(), math.Inf(1), math.Inf(-1), 123456789.125, math.Copysign(0, -1), math.MaxFloat32, 3.4e-39}

func scalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	ints := []int64{0, 1, -1, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64, r.Int64()}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(ints[r.IntN(len(ints))]))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(ints[r.IntN(len(ints))])
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(ints[r.IntN(len(ints))]))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(ints[r.IntN(len(ints))]))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(floats[r.IntN(len(floats))]))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(floats[r.IntN(len(floats))])
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(strs[r.IntN(len(strs))])
	case protoreflect.BytesKind:
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return protoreflect.ValueOfBytes(b)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(r.IntN(4))) // 3 is not a value of the enum
	}
	panic(fd.Kind())
}

func value(r *rand.Rand, depth int) *structpb.Value {
	switch k := r.IntN(6); {
	case k == 0:
		return structpb.NewNullValue()
	case k == 1:
		return structpb.NewBoolValue(r.IntN(2) == 0)
	case k == 2:
		f := floats[r.IntN(len(floats))]
		if math.IsNaN(f) || math.IsInf(f, 0) {
			f = 2.5
		}
		return structpb.NewNumberValue(f)
	case k == 3 || depth <= 0:
		return structpb.NewStringValue(strs[r.IntN(len(strs))])
	case k == 4:
		l := &structpb.ListValue{}
		for range r.IntN(4) {
			l.Values = append(l.Values, value(r, depth-1))
		}
		return structpb.NewListValue(l)
	}
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range r.IntN(4) {
		s.Fields[strs[r.IntN(len(strs))]] = value(r, depth-1)
	}
	return structpb.NewStructValue(s)
}
