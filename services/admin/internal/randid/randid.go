// Package randid makes the admin service's random identifiers (replay ids,
// job ids, test event ids).
package randid

import (
	"crypto/rand"
	"encoding/hex"
)

// New returns prefix followed by n random bytes in hex.
func New(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
