package freshdeskfake_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
)

// The automation webhooks carry the documented template: the rule's event,
// the ticket, its status by name and the response key from the custom
// field; the agent replies and resolves; an API status change is a rule too.
func TestAutomationWebhooksFollowTheTicket(t *testing.T) {
	f, url := serve(t)
	var mu sync.Mutex
	var got []map[string]string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m map[string]string
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("webhook %s: %v", body, err)
		}
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	f.Hooks = &fake.Hooks{URL: hook.URL, Backoff: 10 * time.Millisecond}
	f.Agent = f.NewAgent(1, 20*time.Millisecond, 60*time.Millisecond)
	do := func(method, path, body string) {
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		req.SetBasicAuth(key, "X")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %v %v", method, path, resp, err)
		}
		_ = resp.Body.Close()
	}
	do(http.MethodPost, "/api/v2/tickets", `{"email":"a@example.com","subject":"Detractor","description":"score 2","status":2,"priority":3,"custom_fields":{"cf_closedloop_response":"tf/response/tok1"}}`)
	wait := func(n int) []map[string]string {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			if len(got) >= n {
				out := append([]map[string]string(nil), got...)
				mu.Unlock()
				return out
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("fewer than %d webhooks: %v", n, got)
		return nil
	}
	seen := wait(3)
	var events []string
	for _, m := range seen {
		events = append(events, m["event"]+":"+m["ticket_status"])
		if m["ticket_id"] != "1" || m["closedloop_response"] != "tf/response/tok1" || m["ticket_created_at"] == "" || m["time"] == "" {
			t.Errorf("webhook %v lacks the template's fields", m)
		}
	}
	if strings.Join(events, " ") != "ticket_created:Open agent_reply:Open ticket_resolved:Resolved" {
		t.Fatalf("webhooks %v", events)
	}
	do(http.MethodPut, "/api/v2/tickets/1", `{"status":2}`)
	if last := wait(4)[3]; last["event"] != "ticket_reopened" || last["ticket_status"] != "Open" {
		t.Fatalf("reopened by the API: %v", last)
	}
}
