// Package pulltest holds what the API fakes' contract tests share.
package pulltest

import (
	"context"
	"testing"

	"github.com/closedloop/closedloop/libs/pull"
)

// ListAll pages a lister through a window to its end (failing the test
// on an error or a lister that never ends).
func ListAll(t testing.TB, l pull.Lister, w pull.Window) []pull.Item {
	t.Helper()
	var out []pull.Item
	cursor := ""
	for range 10000 {
		p, err := l.List(context.Background(), w, cursor)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Items...)
		if p.Next == "" {
			return out
		}
		cursor = p.Next
	}
	t.Fatal("the lister never finished")
	return nil
}
