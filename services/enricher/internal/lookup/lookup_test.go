package lookup

import (
	"encoding/json"
	"testing"
)

func TestPathsReachIntoObjectsAndLists(t *testing.T) {
	var doc any
	_ = json.Unmarshal([]byte(`{"account":{"tier":"enterprise","owners":[{"email":"a@x"},{"email":"b@x"}],"arr":null}}`), &doc)
	for path, want := range map[string]any{
		"account.tier": "enterprise", "account.owners[1].email": "b@x", "account.arr": nil,
	} {
		got, ok := At(doc, path)
		if !ok || got != want {
			t.Errorf("%s = %v (%v), want %v", path, got, ok, want)
		}
	}
	for _, missing := range []string{"account.nope", "account.owners[2].email", "account.tier.x", "account.owners[x]"} {
		if v, ok := At(doc, missing); ok {
			t.Errorf("%s found %v", missing, v)
		}
	}
}
