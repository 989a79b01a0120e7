package delightedfake

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/pull"
	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
	"github.com/closedloop/closedloop/tools/internal/pulltest"
)

func seeded(t *testing.T, n int) (*Fake, *httptest.Server, time.Time) {
	t.Helper()
	f := New("key-1")
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		at := base.Add(time.Duration(i) * time.Minute).Unix()
		upd := at
		if i%10 == 0 {
			upd = at + 30 // commented later
		}
		if err := f.AddResponse(map[string]any{"id": strconv.Itoa(1000 + i), "score": i % 11, "survey_type": "nps", "created_at": at, "updated_at": upd,
			"person": map[string]any{"id": strconv.Itoa(5000 + i), "email": "p" + strconv.Itoa(i) + "@example.com"}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		_ = f.AddUnsubscribe(map[string]any{"person_id": strconv.Itoa(9000 + i), "email": "u@example.com", "unsubscribed_at": base.Add(time.Duration(i) * time.Hour).Unix()})
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv, base
}

// The lister reads every response (person expanded) and unsubscribe once,
// as the webhook envelope of its latest state, with deterministic ids.
func TestTheListerReadsEveryItemOnceAsAWebhookEnvelope(t *testing.T) {
	_, srv, _ := seeded(t, 250)
	l, err := pull.NewDelighted(pull.DelightedOptions{BaseURL: srv.URL + "/v1", APIKey: "key-1"})
	if err != nil {
		t.Fatal(err)
	}
	items := pulltest.ListAll(t, l, pull.Window{})
	seen := map[string]bool{}
	updated, unsubs := 0, 0
	for _, it := range items {
		if seen[it.EventID] {
			t.Fatalf("%s listed twice", it.EventID)
		}
		seen[it.EventID] = true
		switch it.EventType {
		case "survey_response.updated":
			updated++
		case "unsubscribe.created":
			unsubs++
		}
		if !strings.Contains(string(it.Body), `"event_data":{`) || (strings.HasPrefix(it.EventType, "survey") && !strings.Contains(string(it.Body), `"person":{`)) {
			t.Fatalf("not a webhook envelope with the person: %s", it.Body)
		}
	}
	if len(items) != 253 || updated != 25 || unsubs != 3 {
		t.Fatalf("%d items, %d updated, %d unsubscribes; want 253, 25, 3", len(items), updated, unsubs)
	}
	again := pulltest.ListAll(t, l, pull.Window{})
	if again[17].EventID != items[17].EventID || string(again[17].Body) != string(items[17].Body) {
		t.Fatal("listing twice gives other ids or bodies")
	}
}

// since/until bound creation (inclusive); updated_since reconciliation
// finds a response commented in the window though created before.
func TestWindowsByCreationAndByUpdate(t *testing.T) {
	_, srv, base := seeded(t, 100)
	l, _ := pull.NewDelighted(pull.DelightedOptions{BaseURL: srv.URL + "/v1", APIKey: "key-1", PerPage: 7})
	got := pulltest.ListAll(t, l, pull.Window{Since: base.Add(10 * time.Minute), Until: base.Add(19 * time.Minute)})
	responses := 0
	for _, it := range got {
		if strings.HasPrefix(it.EventType, "survey") {
			responses++
		}
	}
	if responses != 10 {
		t.Fatalf("%d responses created in [10m, 19m], want 10 (both ends inclusive)", responses)
	}
	byUpd := pulltest.ListAll(t, l, pull.Window{Since: base.Add(20*time.Minute + 30*time.Second), Until: base.Add(20*time.Minute + 30*time.Second), ByUpdate: true})
	if len(byUpd) == 0 || byUpd[0].EventID != "api:response:1020:"+strconv.FormatInt(base.Add(20*time.Minute+30*time.Second).Unix(), 10) {
		t.Fatalf("by update: %v", byUpd)
	}
}

// A wrong key is Unauthenticated (not retried); a 503 and a 429 are.
func TestErrorsAreTypedAndTransientOnesRetried(t *testing.T) {
	f, srv, _ := seeded(t, 5)
	bad, _ := pull.NewDelighted(pull.DelightedOptions{BaseURL: srv.URL + "/v1", APIKey: "nope"})
	if _, err := bad.List(context.Background(), pull.Window{}, ""); !errors.Is(err, pull.ErrUnauthorized) || pull.Retryable(err) {
		t.Fatalf("wrong key: %v", err)
	}
	f.Fail(fake.Failure{Status: http.StatusServiceUnavailable, N: 2})
	f.Fail(fake.Failure{Status: http.StatusTooManyRequests, RetryAfter: 1, N: 1})
	l, _ := pull.NewDelighted(pull.DelightedOptions{BaseURL: srv.URL + "/v1", APIKey: "key-1"})
	start := time.Now()
	p, err := l.List(context.Background(), pull.Window{}, "")
	if err != nil || len(p.Items) != 5 {
		t.Fatalf("after two 503s and a 429: %v, %d items", err, len(p.Items))
	}
	if time.Since(start) < time.Second {
		t.Fatalf("the 429's Retry-After (1 s) was not waited: %s", time.Since(start))
	}
}

// The client's limiter keeps under the provider's limit: the fake, which
// counts requests in every one-second window, never had to refuse one.
// An unlimited client against a limited provider still finishes, paused by
// the 429s' Retry-After.
func TestTheRateLimitIsNeverExceeded(t *testing.T) {
	f, srv, _ := seeded(t, 400)
	f.PerSecond = 4
	l, _ := pull.NewDelighted(pull.DelightedOptions{BaseURL: srv.URL + "/v1", APIKey: "key-1", PerPage: 25, Limiter: pull.NewLimiter(4)})
	items := pulltest.ListAll(t, l, pull.Window{})
	st := f.Stats()
	if len(items) != 403 || st.RateLimited != 0 || st.MaxPerSecond > 4 {
		t.Fatalf("%d items; the fake saw %+v (want no 429 and at most 4 a second)", len(items), st)
	}

	f2, srv2, _ := seeded(t, 100)
	f2.PerSecond = 3
	fast, _ := pull.NewDelighted(pull.DelightedOptions{BaseURL: srv2.URL + "/v1", APIKey: "key-1", PerPage: 10})
	if n := len(pulltest.ListAll(t, fast, pull.Window{})); n != 103 {
		t.Fatalf("unlimited client: %d items", n)
	}
	if st := f2.Stats(); st.RateLimited == 0 || st.MaxPerSecond > 3 {
		t.Fatalf("the fake did not limit: %+v", st)
	}
}
