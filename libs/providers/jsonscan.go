package providers

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// LookupPath reads a dotted path ("data.id") of a string or number in a JSON
// body without decoding the rest of it: the ingress only needs an id and a
// type, and a full decode of every body was its largest cost. It returns ""
// for a missing path, a value that is not a string or number, or malformed
// JSON on the way to it.
func LookupPath(b []byte, path string) string {
	for {
		key, rest, nested := strings.Cut(path, ".")
		v, ok := objectField(b, key)
		if !ok {
			return ""
		}
		if !nested {
			return scalarText(v)
		}
		b, path = v, rest
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// objectField returns the raw value of key in the JSON object b.
func objectField(b []byte, key string) ([]byte, bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] == '}' {
			return nil, false
		}
		if b[i] != '"' {
			return nil, false
		}
		kEnd := skipString(b, i)
		if kEnd < 0 {
			return nil, false
		}
		k := b[i+1 : kEnd-1]
		i = skipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		vStart := skipWS(b, i+1)
		vEnd := skipValue(b, vStart)
		if vEnd < 0 {
			return nil, false
		}
		if keyEquals(k, key) {
			return b[vStart:vEnd], true
		}
		i = skipWS(b, vEnd)
		if i < len(b) && b[i] == ',' {
			i++
		}
	}
}

func keyEquals(raw []byte, key string) bool {
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw) == key
	}
	var s string
	return json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s) == nil && s == key
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index after the JSON value starting at i, or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				if j = skipString(b, j); j < 0 {
					return -1
				}
				j--
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[j])) {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// scalarText is the text of a JSON string or number.
func scalarText(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	if v[0] == '"' {
		// The fast path only for plain valid UTF-8: encoding/json turns an
		// invalid byte into U+FFFD, and so must this.
		if bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
			return strings.TrimSpace(string(v[1 : len(v)-1]))
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return ""
		}
		return strings.TrimSpace(s)
	}
	var n json.Number
	if json.Unmarshal(v, &n) != nil {
		return ""
	}
	return n.String()
}
