package config

import "testing"

// Finding 7 of the hardening review: admin tokens of 16 characters, and
// static ingest tokens of any strength, were accepted.
func TestWeakTokensAreRefusedWithTheReason(t *testing.T) {
	for tok, weak := range map[string]bool{
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":             true, // one character
		"abcabcabcabcabcabcabcabcabcabcabcabc":             true, // few distinct
		"0123456789abcdef0123456789abcdef":                 true, // a repeated pattern
		"short-but-random-Xy7":                             true, // too short
		"3f9c2a7e1b8d4c6f0a5e9b2d7c1f8e3a6b0d4c9e2f7a1b5d": false,
		"q8Zk2LmP0vRt7XyB4nWc1D":                           false, // 22 base62 characters
	} {
		why := WeakToken([]byte(tok), MinIngestTokenLength)
		if (why != "") != weak {
			t.Errorf("%q: %q, want weak=%v", tok, why, weak)
		}
	}
	if why := WeakToken([]byte("q8Zk2LmP0vRt7XyB4nWc1D"), MinAdminTokenLength); why == "" {
		t.Error("a 22-character admin token was accepted; 32 are required")
	}
}
