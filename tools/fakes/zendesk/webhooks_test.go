package zendeskfake_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
	zendeskfake "github.com/closedloop/closedloop/tools/fakes/zendesk"
)

type zdEvent struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Detail struct {
		ID         string `json:"id"`
		ExternalID string `json:"external_id"`
		Status     string `json:"status"`
		CreatedAt  string `json:"created_at"`
	} `json:"detail"`
	Event map[string]any `json:"event"`
}

// receiver collects the webhooks whose signature verifies as Zendesk
// documents it (base64 HMAC-SHA256 of the RFC 3339 timestamp and the body),
// and answers the first one 503 to see it retried.
func receiver(t *testing.T, secret string) (string, func() []zdEvent) {
	var mu sync.Mutex
	var got []zdEvent
	first := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("X-Zendesk-Webhook-Signature-Timestamp")
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(ts))
		m.Write(body)
		if _, err := time.Parse(time.RFC3339, ts); err != nil || r.Header.Get("X-Zendesk-Webhook-Signature") != base64.StdEncoding.EncodeToString(m.Sum(nil)) {
			t.Errorf("webhook not signed as Zendesk signs: ts %q sig %q", ts, r.Header.Get("X-Zendesk-Webhook-Signature"))
		}
		mu.Lock()
		defer mu.Unlock()
		if first {
			first = false
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var e zdEvent
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		got = append(got, e)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []zdEvent { mu.Lock(); defer mu.Unlock(); return append([]zdEvent(nil), got...) }
}

// Ticket events go out as signed webhooks, retried when refused; the agent
// replies publicly and solves the tickets it takes.
func TestTicketEventsAreSignedWebhooksAndTheAgentClosesTheLoop(t *testing.T) {
	f, url := serve(t)
	hookURL, events := receiver(t, "zd-signing-secret")
	f.Hooks = &fake.Hooks{URL: hookURL, Sign: zendeskfake.Signer("zd-signing-secret"), Backoff: 10 * time.Millisecond}
	f.Agent = f.NewAgent(1, 20*time.Millisecond, 60*time.Millisecond)
	req, _ := http.NewRequest(http.MethodPost, url+"/api/v2/tickets.json", strings.NewReader(
		`{"ticket":{"subject":"Detractor","comment":{"body":"score 2"},"requester":{"email":"a@example.com"},"external_id":"dl/response/r1"}}`))
	req.SetBasicAuth(agent+"/token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(events()) < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := events()
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, strings.TrimPrefix(e.Type, "zen:event-type:ticket.")+":"+e.Detail.Status)
		if e.Detail.ID != "1" || e.Detail.ExternalID != "dl/response/r1" || e.ID == "" {
			t.Errorf("event %+v: want ticket 1 of dl/response/r1 with an id", e)
		}
	}
	// created, the agent's public reply, new → open, open → solved.
	if strings.Join(kinds, " ") != "created:NEW comment_added:NEW status_changed:OPEN status_changed:SOLVED" {
		t.Fatalf("events %v", kinds)
	}
	c := got[1].Event["comment"].(map[string]any)
	if c["is_public"] != true || c["author"].(map[string]any)["is_staff"] != true {
		t.Fatalf("agent reply %v: want a public comment by staff", c)
	}
	if got[3].Event["current"] != "SOLVED" || got[3].Event["previous"] != "OPEN" {
		t.Fatalf("status change %v", got[3].Event)
	}
	// Counted once the receiver has answered: the 503 was retried, nothing given up.
	for d, _ := f.Hooks.Counts(); d < 4 && time.Now().Before(deadline); d, _ = f.Hooks.Counts() {
		time.Sleep(10 * time.Millisecond)
	}
	if d, failed := f.Hooks.Counts(); d != 4 || failed != 0 {
		t.Fatalf("delivered %d, failed %d", d, failed)
	}
}

// Latency on command delays every answer (a slow Zendesk), at least by it.
func TestLatencyOnCommand(t *testing.T) {
	f, url := serve(t)
	f.SetLatency(150 * time.Millisecond)
	req, _ := http.NewRequest(http.MethodGet, url+"/api/v2/tickets.json", nil)
	req.SetBasicAuth(agent+"/token", token)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("answered after %s, before the 150ms latency", took)
	}
}
