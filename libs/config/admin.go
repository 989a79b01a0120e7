package config

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
)

// Admin configures the admin service's callers.
type Admin struct {
	// Tokens are the bearer tokens that may call the admin API.
	Tokens []AdminToken `yaml:"tokens"`
}

// Roles of admin callers: a viewer reads; an operator also replays,
// discards, issues and revokes tokens, and pauses.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
)

// AdminToken is one caller.
type AdminToken struct {
	// Name identifies the caller in the audit trail ("ann", "ci-bot").
	Name string `yaml:"name"`
	// Role is viewer or operator.
	Role string `yaml:"role"`
	// TokenRef is the token's secret reference (env:NAME or file:PATH).
	TokenRef string `yaml:"token"`

	hash [sha256.Size]byte
}

// Caller finds the caller a bearer token belongs to, comparing every
// configured token's digest in constant time.
func (a *Admin) Caller(token string) (AdminToken, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range a.Tokens {
		if subtle.ConstantTimeCompare(sum[:], a.Tokens[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 || token == "" {
		return AdminToken{}, false
	}
	return a.Tokens[found], true
}

func (a *Admin) validate(lookup func(string) (string, bool)) []error {
	var errs []error
	seen := map[string]bool{}
	for i := range a.Tokens {
		t := &a.Tokens[i]
		at := fmt.Sprintf("admin.tokens[%d] (%s)", i, t.Name)
		errs = append(errs, uniqueName(at, t.Name, seen, "")...)
		if t.Role != RoleViewer && t.Role != RoleOperator {
			errs = append(errs, fmt.Errorf("%s: role %q must be viewer or operator", at, t.Role))
		}
		if err := checkRef(t.TokenRef); err != nil {
			errs = append(errs, fmt.Errorf("%s: token: %w", at, err))
			continue
		}
		if lookup == nil {
			continue
		}
		s, err := ResolveSecret(t.TokenRef, lookup)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: token: %w", at, err))
			continue
		}
		if why := WeakToken(s.Reveal(), MinAdminTokenLength); why != "" {
			errs = append(errs, fmt.Errorf("%s: token: %s (make one with: openssl rand -hex 24)", at, why))
		}
		t.hash = sha256.Sum256(s.Reveal())
	}
	return errs
}
