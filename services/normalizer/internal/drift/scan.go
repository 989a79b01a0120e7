package drift

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// scanPaths walks a JSON document once and calls fn with the folded path of
// every object member ("a.b", "answers[].id"); the slice is only valid
// during the call. It reports whether the document is valid JSON as far as
// the walk needs (string contents and literals are skipped, not checked).
func scanPaths(b []byte, fn func(path []byte)) bool {
	s := pathScanner{b: b, fn: fn, path: make([]byte, 0, 128)}
	if !s.value(0) {
		return false
	}
	s.ws()
	return s.i == len(s.b)
}

type pathScanner struct {
	b    []byte
	i    int
	path []byte
	fn   func([]byte)
}

// maxDepth bounds recursion on hostile input.
const maxDepth = 128

func (s *pathScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *pathScanner) value(depth int) bool {
	if depth > maxDepth {
		return false
	}
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '{':
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '}' {
			s.i++
			return true
		}
		for {
			s.ws()
			key, ok := s.str()
			if !ok {
				return false
			}
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return false
			}
			s.i++
			n := len(s.path)
			if n > 0 {
				s.path = append(s.path, '.')
			}
			s.path = appendKey(s.path, key)
			s.fn(s.path)
			if !s.value(depth + 1) {
				return false
			}
			s.path = s.path[:n]
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case ',':
				s.i++
			case '}':
				s.i++
				return true
			default:
				return false
			}
		}
	case '[':
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return true
		}
		n := len(s.path)
		s.path = append(s.path, "[]"...)
		for {
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case ',':
				s.i++
			case ']':
				s.i++
				s.path = s.path[:n]
				return true
			default:
				return false
			}
		}
	case '"':
		_, ok := s.str()
		return ok
	default:
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}

// str reads a string token and returns it with its quotes. It jumps from
// quote to quote (bytes.IndexByte) instead of looking at every byte: a
// webhook's longest strings are its comments. A quote ends the string
// unless an odd number of backslashes comes right before it.
func (s *pathScanner) str() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i
	for from := start + 1; ; {
		j := bytes.IndexByte(s.b[from:], '"')
		if j < 0 {
			s.i = len(s.b)
			return nil, false
		}
		q := from + j
		escapes := 0
		for k := q - 1; k > start && s.b[k] == '\\'; k-- {
			escapes++
		}
		from = q + 1
		if escapes%2 == 0 {
			s.i = from
			return s.b[start:s.i], true
		}
	}
}

// appendKey appends a quoted key's text. Keys with escapes or invalid UTF-8
// (rare) are decoded as encoding/json does, so paths match the mapping's view.
func appendKey(dst, quoted []byte) []byte {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return append(dst, inner...)
	}
	var k string
	if json.Unmarshal(quoted, &k) != nil {
		return append(dst, inner...)
	}
	return append(dst, k...)
}
