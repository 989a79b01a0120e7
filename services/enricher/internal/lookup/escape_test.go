package lookup

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/config"
)

// Finding 7 of the hardening review: keys were escaped with PathEscape, so
// "..", "&" and "=" reached the CRM as path segments and parameters.
func TestAKeyCannotReachAnotherPathOrAddAParameter(t *testing.T) {
	for key, want := range map[string]string{
		"example.de":        "example.de",
		"..":                "%2E%2E",
		".":                 "%2E",
		"a&admin=1":         "a%26admin%3D1",
		"../accounts/all":   "..%2Faccounts%2Fall",
		"x?y#z%":            "x%3Fy%23z%25",
		"anna@example.de":   "anna%40example.de",
		"Jörg Schäfer":      "J%C3%B6rg%20Sch%C3%A4fer",
		"tab\there\r\nline": "tab%09here%0D%0Aline",
	} {
		if got := EscapeKey(key); got != want {
			t.Errorf("EscapeKey(%q) = %q, want %q", key, got, want)
		}
	}
}

// ... and followed redirects carrying the custom secret headers.
func TestARedirectIsNotFollowedSoSecretHeadersStayHome(t *testing.T) {
	var mu sync.Mutex
	var leaked []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		leaked = append(leaked, r.Header.Get("X-Api-Key"))
		mu.Unlock()
		_, _ = io.WriteString(w, `{"tier":"stolen"}`)
	}))
	defer elsewhere.Close()
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.EscapedPath(), "/accounts/") {
			t.Errorf("the CRM got path %q", r.URL.EscapedPath())
		}
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
	}))
	defer crm.Close()
	t.Setenv("CRM_KEY", "secret-crm-key-0123456789")
	l, err := New(config.Lookup{Name: "account", URL: crm.URL + "/accounts/{key}", Method: http.MethodGet,
		SecretHeaders: map[string]string{"X-Api-Key": "env:CRM_KEY"}, Timeout: config.Duration{Duration: 2 * time.Second}},
		Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), LookupEnv: func(k string) (string, bool) { return "secret-crm-key-0123456789", k == "CRM_KEY" }})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = l.request(context.Background(), "example.de")
	if err == nil || !strings.Contains(err.Error(), "redirects are not followed") {
		t.Fatalf("err = %v, want the redirect refused", err)
	}
	if _, ok := err.(permanentErr); !ok {
		t.Fatalf("a redirect is a configuration error, not retryable: %T", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) > 0 {
		t.Fatalf("the redirect target got the secret header: %q", leaked)
	}
}
