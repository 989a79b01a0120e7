package config

import (
	"fmt"
	"math"
)

// Shortest tokens accepted: an ingest token is in a URL the provider holds
// (22 characters of base62 carry 128 bits); an admin token opens the
// control plane.
const (
	MinIngestTokenLength = 22
	MinAdminTokenLength  = 32
)

// minTokenBits is the least information a token must show in its own
// characters (their empirical entropy times its length). It cannot prove a
// token random, but it refuses the typed ones: "aaaa…", "password1234…",
// "0123456789abcdef0123…".
const minTokenBits = 64

// WeakToken says why token is too weak to authenticate anyone, or "" when it
// is long enough and looks random enough.
func WeakToken(token []byte, minLen int) string {
	if len(token) < minLen {
		return fmt.Sprintf("%d characters, at least %d are required", len(token), minLen)
	}
	counts := map[byte]int{}
	for _, c := range token {
		counts[c]++
	}
	if len(counts) < 8 {
		return fmt.Sprintf("only %d distinct characters", len(counts))
	}
	// A repeated pattern ("abcdabcd…") is as strong as one period of it.
	for period := 1; period <= len(token)/2; period++ {
		repeats := true
		for i := period; i < len(token) && repeats; i++ {
			repeats = token[i] == token[i-period]
		}
		if repeats {
			return fmt.Sprintf("a pattern of %d characters repeated", period)
		}
	}
	bits := 0.0
	for _, n := range counts {
		p := float64(n) / float64(len(token))
		bits -= p * math.Log2(p)
	}
	if total := bits * float64(len(token)); total < minTokenBits {
		return fmt.Sprintf("about %.0f bits of information, at least %d are required", total, minTokenBits)
	}
	return ""
}
