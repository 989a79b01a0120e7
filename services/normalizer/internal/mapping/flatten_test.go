package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// referenceFlatten is the obvious implementation (encoding/json into a
// generic tree, then a walk) that Flatten must agree with. Two different
// paths can flatten to one key ({"a.b":1} and {"a":{"b":2}}; {".":1} and
// {"":{"":2}}): Flatten keeps the last in document order, which the
// reference's map walk cannot know, so such keys are returned in ambiguous
// and not compared.
func referenceFlatten(prefix string, raw []byte) (map[string]*structpb.Value, error) {
	out, _, err := referenceFlattenAmbiguous(prefix, raw)
	return out, err
}

func referenceFlattenAmbiguous(prefix string, raw []byte) (map[string]*structpb.Value, map[string]bool, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, nil, err
	}
	if len(bytes.Trim(raw[d.InputOffset():], " \t\r\n")) != 0 {
		return nil, nil, fmt.Errorf("trailing data")
	}
	out := map[string]*structpb.Value{}
	ambiguous := map[string]bool{}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		if _, dup := out[key]; dup {
			ambiguous[key] = true
		}
		switch x := v.(type) {
		case map[string]any:
			if len(x) == 0 && key != "" {
				out[key] = structpb.NewStructValue(&structpb.Struct{})
			}
			for k, c := range x {
				walk(join(key, k), c)
			}
		case []any:
			if len(x) == 0 && key != "" {
				out[key] = structpb.NewListValue(&structpb.ListValue{})
			}
			for i, c := range x {
				walk(join(key, strconv.Itoa(i)), c)
			}
		case nil:
			out[key] = structpb.NewNullValue()
		case json.Number:
			if f, err := x.Float64(); err == nil {
				out[key] = structpb.NewNumberValue(f)
			} else {
				out[key] = structpb.NewStringValue(x.String())
			}
		case string:
			out[key] = structpb.NewStringValue(x)
		case bool:
			out[key] = structpb.NewBoolValue(x)
		}
	}
	walk(prefix, v)
	return out, ambiguous, nil
}

func FuzzFlattenMatchesTheReference(f *testing.F) {
	for _, s := range []string{
		`{"plan":"enterprise","account":{"id":"acct_42","region":"eu-central"},"seats":120,"tags":["a","b"],"n":null,"e":{},"l":[]}`,
		`[1,-2.5e3,true,false,null,"x\"y\u00e9"]`, `{"big":1e400,"neg":-0,"nested":[[{"a":[]}]]}`, `"just a string"`, `42`,
		`{"a":1,"a":2}`, `{"k\u00e9":{"":1}}`,
	} {
		f.Add("p", []byte(s))
	}
	f.Fuzz(func(t *testing.T, prefix string, body []byte) {
		want, ambiguous, werr := referenceFlattenAmbiguous(prefix, body)
		got := map[string]*structpb.Value{}
		gerr := Flatten(prefix, body, got)
		if werr != nil {
			return // invalid JSON: Flatten may fail or not, it must not panic
		}
		if gerr != nil {
			t.Fatalf("Flatten(%q) failed on valid JSON: %v", body, gerr)
		}
		// Every reference key with its value (with duplicate object keys the
		// reference keeps only the last member's subtree; Flatten keeps the
		// keys of both, the last value winning on the same key).
		for k, w := range want {
			if !ambiguous[k] && !proto.Equal(got[k], w) {
				t.Fatalf("Flatten(%q)[%q] = %v, want %v", body, k, got[k], w)
			}
		}
	})
}
