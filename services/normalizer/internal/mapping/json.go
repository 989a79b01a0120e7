package mapping

import (
	"github.com/segmentio/encoding/json"
	"strings"
)

// obj is a JSON object decoded one level deep, for mappers that read a few
// fields and keep the rest as properties.
type obj map[string]json.RawMessage

func decodeObj(raw json.RawMessage) (obj, bool) {
	if isNull(raw) {
		return nil, false
	}
	var o obj
	if decodeJSON(raw, &o) != nil {
		return nil, false
	}
	return o, true
}

// str is the string (or number as text) at key; "" when absent or null.
func (o obj) str(key string) string {
	return idString(o[key])
}

// sub is the object at key.
func (o obj) sub(key string) obj {
	s, _ := decodeObj(o[key])
	return s
}

// strPtr is the string at key, nil when absent or null.
func (o obj) strPtr(key string) *string {
	raw, ok := o[key]
	if !ok || isNull(raw) {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil
	}
	return &s
}

func joinName(first, last string) string {
	return strings.TrimSpace(strings.TrimSpace(first) + " " + strings.TrimSpace(last))
}
