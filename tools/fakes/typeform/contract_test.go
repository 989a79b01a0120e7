package typeformfake

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/pull"
	"github.com/closedloop/closedloop/tools/internal/pulltest"
)

func seeded(t *testing.T, form string, n int, base time.Time) (*Fake, *httptest.Server) {
	t.Helper()
	f := New("tf-token")
	f.PerSecond = 0
	for i := range n {
		at := base.Add(time.Duration(i) * time.Second).Format(time.RFC3339)
		item := map[string]any{"token": "tok" + strconv.Itoa(i), "landed_at": at, "submitted_at": at,
			"answers": []any{map[string]any{"type": "number", "number": i % 11, "field": map[string]any{"id": "f1", "type": "opinion_scale"}}}}
		if i%50 == 49 {
			delete(item, "submitted_at") // partial
		}
		if err := f.AddResponse(form, item); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

// Pages of before-tokens traverse every completed response once (partial
// ones only when asked for), each as a form_response webhook envelope.
func TestTheListerPagesThroughEveryResponseOnce(t *testing.T) {
	base := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	f, srv := seeded(t, "frm1", 2500, base)
	_ = f.AddResponse("frm2", map[string]any{"token": "other", "landed_at": base.Format(time.RFC3339), "submitted_at": base.Format(time.RFC3339)})
	l, err := pull.NewTypeform(pull.TypeformOptions{BaseURL: srv.URL, Token: "tf-token", Forms: []string{"frm1", "frm2"}, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	items := pulltest.ListAll(t, l, pull.Window{})
	seen := map[string]bool{}
	for _, it := range items {
		if seen[it.EventID] {
			t.Fatalf("%s twice", it.EventID)
		}
		seen[it.EventID] = true
		if it.EventType != "form_response" || !strings.Contains(string(it.Body), `"form_response":{"form_id":`) {
			t.Fatalf("%s: %s", it.EventType, it.Body)
		}
	}
	if len(items) != 2500-50+1 {
		t.Fatalf("%d completed responses, want %d", len(items), 2500-50+1)
	}
	withPartial, _ := pull.NewTypeform(pull.TypeformOptions{BaseURL: srv.URL, Token: "tf-token", Forms: []string{"frm1"}, Partial: true})
	if n := len(pulltest.ListAll(t, withPartial, pull.Window{})); n != 2500 {
		t.Fatalf("with partial responses: %d, want 2500", n)
	}
}

// since and until are inclusive; the window's boundary response is the same
// event (id) whichever window lists it.
func TestTheWindowIsInclusiveAndTheBoundaryIsOneEvent(t *testing.T) {
	base := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	_, srv := seeded(t, "frm1", 40, base)
	l, _ := pull.NewTypeform(pull.TypeformOptions{BaseURL: srv.URL, Token: "tf-token", Forms: []string{"frm1"}, PageSize: 7})
	first := pulltest.ListAll(t, l, pull.Window{Since: base, Until: base.Add(20 * time.Second)})
	second := pulltest.ListAll(t, l, pull.Window{Since: base.Add(20 * time.Second), Until: base.Add(39 * time.Second)})
	if len(first) != 21 || len(second) != 20 {
		t.Fatalf("%d and %d responses, want 21 and 20 (inclusive ends)", len(first), len(second))
	}
	ids := map[string]int{}
	for _, it := range append(first, second...) {
		ids[it.EventID]++
	}
	if ids["api:typeform:tok20:"+strconv.FormatInt(base.Add(20*time.Second).Unix(), 10)] != 2 || len(ids) != 40 {
		t.Fatalf("the boundary response is not one event in both windows: %d distinct", len(ids))
	}
}

func TestTypeformErrorsAreTyped(t *testing.T) {
	f, srv := seeded(t, "frm1", 3, time.Now())
	bad, _ := pull.NewTypeform(pull.TypeformOptions{BaseURL: srv.URL, Token: "wrong", Forms: []string{"frm1"}})
	if _, err := bad.List(context.Background(), pull.Window{}, ""); !errors.Is(err, pull.ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
	missing, _ := pull.NewTypeform(pull.TypeformOptions{BaseURL: srv.URL, Token: "tf-token", Forms: []string{"nope"}})
	if _, err := missing.List(context.Background(), pull.Window{}, ""); !fault.Is(err, fault.NotFound) || pull.Retryable(err) {
		t.Fatalf("unknown form: %v", err)
	}
	f.PerSecond = 2
	l, _ := pull.NewTypeform(pull.TypeformOptions{BaseURL: srv.URL, Token: "tf-token", Forms: []string{"frm1"}, Limiter: pull.NewLimiter(2)})
	for range 6 {
		if _, err := l.List(context.Background(), pull.Window{}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if st := f.Stats(); st.RateLimited != 0 || st.MaxPerSecond > 2 {
		t.Fatalf("the limiter let the client exceed 2/s: %+v", st)
	}
	resp, _ := http.Get(srv.URL + "/forms/frm1/responses?page_size=1001")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}
