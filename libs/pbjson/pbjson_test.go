package pbjson

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/closedloop/closedloop/libs/pbjson/internal/gen"
	"github.com/closedloop/closedloop/libs/pbjson/pbjsontest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// same checks that Marshal writes the JSON value protojson writes, or
// fails where protojson fails.
func same(t testing.TB, m proto.Message) {
	t.Helper()
	want, werr := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	got, gerr := Marshal(m)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("protojson's error %v, ours %v\nprotojson: %s\nours:      %s", werr, gerr, want, got)
	}
	if werr != nil {
		return
	}
	if !json.Valid(got) {
		t.Fatalf("not JSON: %s", got)
	}
	if !reflect.DeepEqual(decode(t, want), decode(t, got)) {
		t.Fatalf("different JSON\nprotojson: %s\nours:      %s", want, got)
	}
}

// decode reads JSON keeping numbers as written, so that 1e-7 and 1e-07
// differ.
func decode(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}

// kitchenSink is a message type with a field of every kind, repeated and
// singular, optional, in a oneof, maps with every key kind, the well-known
// types and itself.
func kitchenSink(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	type F = descriptorpb.FieldDescriptorProto
	var fields []*F
	n := int32(0)
	add := func(name string, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label, typeName string) *F {
		n++
		f := &F{Name: proto.String(name), Number: proto.Int32(n), Type: typ.Enum(), Label: label.Enum(), JsonName: proto.String(name + "Json")}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		fields = append(fields, f)
		return f
	}
	opt, rep := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL, descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	scalars := []descriptorpb.FieldDescriptorProto_Type{}
	for typ := range descriptorpb.FieldDescriptorProto_Type_name {
		typ := descriptorpb.FieldDescriptorProto_Type(typ)
		if typ != descriptorpb.FieldDescriptorProto_TYPE_GROUP && typ != descriptorpb.FieldDescriptorProto_TYPE_MESSAGE && typ != descriptorpb.FieldDescriptorProto_TYPE_ENUM {
			scalars = append(scalars, typ)
		}
	}
	var entries []*descriptorpb.DescriptorProto
	for _, typ := range scalars {
		name := strings.ToLower(strings.TrimPrefix(typ.String(), "TYPE_"))
		add("s_"+name, typ, opt, "")
		add("r_"+name, typ, rep, "")
		f := add("o_"+name, typ, opt, "")
		f.Proto3Optional = proto.Bool(true)
		f.OneofIndex = proto.Int32(-1) // its own synthetic oneof, numbered below
		if typ != descriptorpb.FieldDescriptorProto_TYPE_FLOAT && typ != descriptorpb.FieldDescriptorProto_TYPE_DOUBLE && typ != descriptorpb.FieldDescriptorProto_TYPE_BYTES {
			entry := "M" + strings.ToUpper(name[:1]) + name[1:] + "Entry" // m_<name>'s implicit entry
			entries = append(entries, &descriptorpb.DescriptorProto{
				Name:    proto.String(entry),
				Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				Field: []*F{
					{Name: proto.String("key"), Number: proto.Int32(1), Type: typ.Enum(), Label: opt.Enum(), JsonName: proto.String("key")},
					{Name: proto.String("value"), Number: proto.Int32(2), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: opt.Enum(), JsonName: proto.String("value")},
				},
			})
			add("m_"+name, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, rep, ".t.Sink."+entry)
		}
	}
	msg := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	add("s_enum", descriptorpb.FieldDescriptorProto_TYPE_ENUM, opt, ".t.Color")
	add("r_enum", descriptorpb.FieldDescriptorProto_TYPE_ENUM, rep, ".t.Color")
	add("null", descriptorpb.FieldDescriptorProto_TYPE_ENUM, opt, ".google.protobuf.NullValue")
	add("child", msg, opt, ".t.Sink")
	add("children", msg, rep, ".t.Sink")
	entries = append(entries, &descriptorpb.DescriptorProto{
		Name:    proto.String("MChildEntry"),
		Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
		Field: []*F{
			{Name: proto.String("key"), Number: proto.Int32(1), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: opt.Enum(), JsonName: proto.String("key")},
			{Name: proto.String("value"), Number: proto.Int32(2), Type: msg.Enum(), Label: opt.Enum(), TypeName: proto.String(".t.Sink"), JsonName: proto.String("value")},
		},
	})
	add("m_child", msg, rep, ".t.Sink.MChildEntry")
	for _, wkt := range []string{"Timestamp", "Duration", "Struct", "Value", "ListValue", "Empty", "BoolValue", "Int32Value",
		"Int64Value", "UInt32Value", "UInt64Value", "FloatValue", "DoubleValue", "StringValue", "BytesValue", "Any", "FieldMask"} {
		add("w_"+strings.ToLower(wkt), msg, opt, ".google.protobuf."+wkt)
		add("rw_"+strings.ToLower(wkt), msg, rep, ".google.protobuf."+wkt)
	}
	// A real oneof of two fields.
	a := add("one_a", descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, "")
	b := add("one_b", msg, opt, ".t.Sink")
	// The real oneof first, then one synthetic oneof per optional field.
	oneofs := []*descriptorpb.OneofDescriptorProto{{Name: proto.String("one")}}
	for _, f := range fields {
		if f.OneofIndex != nil {
			f.OneofIndex = proto.Int32(int32(len(oneofs)))
			oneofs = append(oneofs, &descriptorpb.OneofDescriptorProto{Name: proto.String("_" + f.GetName())})
		}
	}
	a.OneofIndex, b.OneofIndex = proto.Int32(0), proto.Int32(0)
	file := &descriptorpb.FileDescriptorProto{
		Name: proto.String("t/sink.proto"), Package: proto.String("t"), Syntax: proto.String("proto3"),
		Dependency: []string{"google/protobuf/timestamp.proto", "google/protobuf/duration.proto", "google/protobuf/struct.proto",
			"google/protobuf/empty.proto", "google/protobuf/wrappers.proto", "google/protobuf/any.proto", "google/protobuf/field_mask.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: proto.String("Color"), Value: []*descriptorpb.EnumValueDescriptorProto{
			{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)}, {Name: proto.String("RED"), Number: proto.Int32(1)}, {Name: proto.String("BLUE"), Number: proto.Int32(2)},
		}}},
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("Sink"), Field: fields, NestedType: entries, OneofDecl: oneofs}},
	}
	fd, err := protodesc.NewFile(file, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().Get(0)
}

func TestEveryKindOfFieldIsWrittenAsProtojsonWritesIt(t *testing.T) {
	md := kitchenSink(t)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 1000 {
		m := dynamicpb.NewMessage(md)
		pbjsontest.Fill(r, m, i%2) // nested messages one level down in every other
		// Most runs leave out the Any and the FieldMask, which go to
		// protojson whole.
		if r.IntN(4) > 0 {
			for _, name := range []protoreflect.Name{"w_any", "rw_any", "w_fieldmask", "rw_fieldmask"} {
				m.Clear(md.Fields().ByName(name))
			}
		}
		// And most leave out the non-finite floats, which protojson
		// rejects in a Value.
		same(t, m)
	}
}

func TestFeedbackEventsAreWrittenAsProtojsonWritesThem(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		ev := &feedbackv1.FeedbackEvent{}
		pbjsontest.Fill(r, ev.ProtoReflect(), 3)
		same(t, ev)
	}
	same(t, typical())
}

// What protojson rejects is rejected, not written.
func TestWhatProtojsonRejectsIsRejected(t *testing.T) {
	bad := []proto.Message{
		&feedbackv1.FeedbackEvent{EventId: "bad \xff utf-8"},
		&feedbackv1.FeedbackEvent{Tags: []string{"ok", "\xc3"}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"\xff": structpb.NewNullValue()}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"nan": structpb.NewNumberValue(math.NaN())}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"inf": structpb.NewNumberValue(math.Inf(-1))}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"unset": {}}},
		&feedbackv1.FeedbackEvent{OccurredAt: &timestamppb.Timestamp{Seconds: 253402300800}},
		&feedbackv1.FeedbackEvent{OccurredAt: &timestamppb.Timestamp{Seconds: -62135596801}},
		&feedbackv1.FeedbackEvent{OccurredAt: &timestamppb.Timestamp{Nanos: 1e9}},
		&feedbackv1.FeedbackEvent{OccurredAt: &timestamppb.Timestamp{Nanos: -1}},
		&durationpb.Duration{Seconds: 315576000001},
		&durationpb.Duration{Seconds: 1, Nanos: -1},
		&durationpb.Duration{Nanos: 1e9},
	}
	for _, m := range bad {
		if _, err := protojson.Marshal(m); err == nil {
			t.Fatalf("protojson accepts %v: the case is wrong", m)
		}
		if b, err := Marshal(m); err == nil {
			t.Fatalf("%v was written: %s", m, b)
		}
		same(t, m)
	}
	// The edges themselves are fine.
	for _, m := range []proto.Message{
		&timestamppb.Timestamp{Seconds: 253402300799, Nanos: 999999999}, &timestamppb.Timestamp{Seconds: -62135596800},
		&durationpb.Duration{Seconds: -315576000000, Nanos: -999999999}, &durationpb.Duration{Nanos: -5}, &emptypb.Empty{},
		wrapperspb.Double(math.NaN()), wrapperspb.Float(float32(math.Inf(1))), wrapperspb.Bytes([]byte{0, 255}), wrapperspb.Int64(-1),
	} {
		same(t, m)
	}
}

func TestAppendAddsToWhatIsThere(t *testing.T) {
	b, err := Append([]byte("prefix:"), wrapperspb.String("x"))
	if err != nil || string(b) != `prefix:"x"` {
		t.Fatalf("%q %v", b, err)
	}
	// A failure leaves b as it was.
	b, err = Append([]byte("prefix:"), &feedbackv1.FeedbackEvent{EventId: "\xff"})
	if err == nil || string(b) != "prefix:" {
		t.Fatalf("%q %v", b, err)
	}
	// So does one that protojson writes.
	a, _ := anypb.New(wrapperspb.String("x"))
	b, err = Append([]byte("prefix:"), a)
	if err != nil || !strings.HasPrefix(string(b), "prefix:{") {
		t.Fatalf("%q %v", b, err)
	}
}

// Any bytes that decode as an event are written as protojson writes them.
func FuzzFeedbackEvent(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		ev := &feedbackv1.FeedbackEvent{}
		pbjsontest.Fill(r, ev.ProtoReflect(), 2)
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev := &feedbackv1.FeedbackEvent{}
		if proto.Unmarshal(b, ev) != nil {
			return
		}
		same(t, ev)
		sameAsWalk(t, ev)
	})
}

// typical is an event as the enricher hands it to the sinks: a scored
// response with a comment, two answers, tags, properties, a CRM lookup.
func typical() *feedbackv1.FeedbackEvent {
	now := timestamppb.Now()
	return &feedbackv1.FeedbackEvent{
		EventId: "delighted:r-8713263", Source: "delighted-main", Provider: "delighted", ProviderEventType: "survey_response.created",
		Kind: feedbackv1.Kind_KIND_RESPONSE_CREATED, OccurredAt: now, ReceivedAt: now, NormalizedAt: now, Version: now,
		Subject:    &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r-8713263"},
		Survey:     &feedbackv1.Survey{Id: "nps-q4", Name: "NPS Q4", Type: feedbackv1.SurveyType_SURVEY_TYPE_NPS},
		Score:      &feedbackv1.Score{Value: 3, Min: 0, Max: 10},
		Segment:    feedbackv1.Segment_SEGMENT_DETRACTOR,
		Comment:    proto.String("The export keeps timing out and support took \"three days\" to answer.\nPlease fix."),
		Answers:    []*feedbackv1.Answer{{QuestionId: "q1", QuestionText: "How likely…", Type: "nps", Value: "3"}, {QuestionId: "q2", Type: "text", Value: "exports"}},
		Respondent: &feedbackv1.Respondent{Id: "p-42", Email: "ana@example.com", Name: "Ana Müller", Locale: "de"},
		Tags:       []string{"export", "support"},
		Properties: map[string]*structpb.Value{"plan": structpb.NewStringValue("enterprise"), "seats": structpb.NewNumberValue(250), "region": structpb.NewStringValue("eu")},
		Enrichment: &feedbackv1.Enrichment{Labels: []string{"at-risk"}, MatchedRules: []string{"detractor-enterprise"}, EnrichedAt: now,
			Lookups: map[string]*feedbackv1.LookupResult{"crm": {Fields: map[string]*structpb.Value{"arr": structpb.NewNumberValue(120000), "owner": structpb.NewStringValue("kim")}}}},
		RawRef: &feedbackv1.RawRef{Topic: "feedback.raw", Partition: 3, Offset: 918273, Size: 1532, Sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
	}
}

func BenchmarkFeedbackEvent(b *testing.B) {
	full := &feedbackv1.FeedbackEvent{}
	pbjsontest.Fill(rand.New(rand.NewPCG(7, 8)), full.ProtoReflect(), 2)
	for _, c := range []struct {
		name string
		ev   *feedbackv1.FeedbackEvent
	}{{"typical", typical()}, {"every-field", full}} {
		b.Run(c.name+"/protojson", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := (protojson.MarshalOptions{UseProtoNames: true}).Marshal(c.ev); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/pbjson-walk", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := appendMessage(make([]byte, 0, 1024), c.ev.ProtoReflect(), 0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/pbjson", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Marshal(c.ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// walked writes m by the reflective walk alone.
func walked(m proto.Message) ([]byte, error) { return appendMessage(nil, m.ProtoReflect(), 0) }

// sameAsWalk checks that m's generated encoder writes the bytes the
// reflective walk writes, or fails where it fails.
func sameAsWalk(t testing.TB, m proto.Message) {
	t.Helper()
	want, werr := walked(m)
	got, ok, gerr := appendGenerated(nil, m)
	if !ok {
		t.Fatalf("%T has no generated encoder", m)
	}
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("the walk's error %v, the generated encoder's %v\nwalk:      %s\ngenerated: %s", werr, gerr, want, got)
	}
	if werr == nil && !bytes.Equal(want, got) {
		t.Fatalf("different bytes\nwalk:      %s\ngenerated: %s", want, got)
	}
}

func TestGeneratedCodeIsCurrent(t *testing.T) {
	want, err := gen.Source()
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("generated.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, have) {
		t.Fatal("generated.go is stale: run 'go generate' in libs/pbjson (or make generate) and commit it")
	}
}

// Every message of the package has a generated encoder (but one with a
// real oneof, which the generator leaves to the walk: none has one today),
// and it writes the bytes the walk writes, with fields set at random, with
// none, and for a nil message.
func TestEveryMessageOfThePackageHasAGeneratedEncoder(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	n := 0
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		d := mt.Descriptor()
		if d.ParentFile().Package() != gen.Package || d.IsMapEntry() {
			return true
		}
		if gen.LeftToTheWalk(d) {
			if _, ok, _ := appendGenerated(nil, mt.New().Interface()); ok {
				t.Errorf("%s has a real oneof and a generated encoder", d.FullName())
			}
			return true
		}
		n++
		sameAsWalk(t, mt.New().Interface())
		sameAsWalk(t, mt.Zero().Interface()) // a nil message
		for range 200 {
			m := mt.New()
			pbjsontest.Fill(r, m, 3)
			sameAsWalk(t, m.Interface())
		}
		return true
	})
	if n < 10 {
		t.Fatalf("only %d messages of %s are registered", n, gen.Package)
	}
}

// The generated encoders meet what the walk meets at its edges: nil
// messages in lists and maps, nil and kindless Values, -0, unknown enum
// numbers, invalid UTF-8 and out-of-range times.
func TestGeneratedEncodersAtTheEdges(t *testing.T) {
	var neg0 = math.Copysign(0, -1)
	for _, m := range []proto.Message{
		&feedbackv1.FeedbackEvent{Answers: []*feedbackv1.Answer{nil, {}}, Enrichment: &feedbackv1.Enrichment{Lookups: map[string]*feedbackv1.LookupResult{"a": nil, "b": {}}}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"s": structpb.NewStructValue(nil), "l": structpb.NewListValue(nil)}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"nil": nil}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"unset": {}}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"nan": structpb.NewNumberValue(math.NaN())}},
		&feedbackv1.FeedbackEvent{Properties: map[string]*structpb.Value{"\xff": structpb.NewNullValue()}},
		&feedbackv1.FeedbackEvent{Score: &feedbackv1.Score{Value: neg0, Min: math.Inf(1), Max: math.NaN()}},
		&feedbackv1.FeedbackEvent{Kind: 999, Segment: -1, Comment: proto.String("")},
		&feedbackv1.FeedbackEvent{EventId: "bad \xff utf-8"},
		&feedbackv1.FeedbackEvent{OccurredAt: &timestamppb.Timestamp{Seconds: 253402300800}},
		&feedbackv1.FeedbackEvent{OccurredAt: &timestamppb.Timestamp{}, ReceivedAt: &timestamppb.Timestamp{Nanos: 1e9}},
		&feedbackv1.RawWebhook{Headers: map[string]string{"b": "2", "a": "1", "\xff": "x"}},
		&feedbackv1.RawWebhook{Body: []byte{0, 1, 255}, Headers: map[string]string{"b": "2", "a": "1"}},
	} {
		sameAsWalk(t, m)
		same(t, m)
	}
}
