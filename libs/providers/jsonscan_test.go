package providers

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestLookupPathAgreesWithEncodingJSON(t *testing.T) {
	body := `{ "a": {"b": [1, {"c": "}"}], "id": "in\"ner"}, "event_id" : "e\u00e9", "n": 12.50, "s": "x", "nul": null, "obj": {"id": 7}, "t": true }`
	cases := map[string]string{
		"event_id": "eé", "n": "12.50", "s": "x", "obj.id": "7", "a.id": `in"ner`,
		"nul": "", "t": "", "a": "", "missing": "", "a.b": "", "obj.id.x": "",
	}
	for path, want := range cases {
		if got := LookupPath([]byte(body), path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	for _, bad := range []string{``, `[]`, `{"a":`, `{"a" 1}`, `{"a":"x`, `nope`, `{"id":"x"`} {
		_ = LookupPath([]byte(bad), "a.id") // must not panic
	}
}

func FuzzLookupPathMatchesEncodingJSON(f *testing.F) {
	f.Add([]byte(`{"event_id":"e","data":{"id":1}}`), "data.id")
	f.Add([]byte(`{"a":"\"}","b":{"c":[{"d":2}]}}`), "b.c")
	f.Fuzz(func(t *testing.T, body []byte, path string) {
		got := LookupPath(body, path)
		if !json.Valid(body) || strings.Contains(path, "..") {
			return
		}
		// On valid JSON without duplicate keys, agree with a full decode.
		var top any
		_ = json.Unmarshal(body, &top)
		cur := top
		for _, k := range strings.Split(path, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				cur = nil
				break
			}
			cur = m[k]
		}
		var want string
		switch v := cur.(type) {
		case string:
			want = strings.TrimSpace(v)
		case float64:
			want = got // numbers keep their text; checked for presence only
			if got == "" {
				t.Fatalf("number at %q not found in %s", path, body)
			}
		}
		if hasDuplicateKeys(body) {
			return
		}
		if got != want {
			t.Fatalf("%q in %s: got %q, want %q", path, body, got, want)
		}
	})
}

func hasDuplicateKeys(b []byte) bool {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var walk func() bool
	walk = func() bool {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, _ := dec.Token()
				ks, _ := k.(string)
				if seen[ks] {
					return true
				}
				seen[ks] = true
				if walk() {
					return true
				}
			}
			_, _ = dec.Token()
		case json.Delim('['):
			for dec.More() {
				if walk() {
					return true
				}
			}
			_, _ = dec.Token()
		}
		return false
	}
	return walk()
}
