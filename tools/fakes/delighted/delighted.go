// Package delightedfake is a local Delighted API (v1) for tests and `make
// run`, behaving as Delighted documents where closedloop depends on it
// (../shared/design/VENDOR_APIS.md §6):
//
//   - auth: Basic with the API key as the user (empty password); anything
//     else 401 {"status":401,"message":"…"};
//   - GET /v1/survey_responses.json: per_page (default 20, at most 100),
//     page (from 1), since/until on created_at and updated_since/
//     updated_until on updated_at (unix seconds, inclusive), order asc
//     (default), desc, asc:updated_at, desc:updated_at, expand[]=person
//     (else person is the person's id); a bare JSON array, empty after the
//     last page;
//   - GET /v1/unsubscribes.json: per_page, page, since/until on
//     unsubscribed_at;
//   - a per-second limit (PerSecond) answered 429 with Retry-After in
//     seconds; the most requests it ever let through in one second is in
//     Stats, so a test can prove a client never exceeded it;
//   - latency and failures on command; GET /_fake/stats for inspection;
//     POST /_fake/responses and /_fake/unsubscribes to add items (the
//     webhook generator adds each response it makes, whether or not it
//     sends the webhook).
package delightedfake

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
)

// Fake is the server. Configure it before serving.
type Fake struct {
	// APIKey is the one key accepted.
	APIKey string
	// PerSecond limits requests (0: unlimited).
	PerSecond int
	Latency   fake.Latency

	mu        sync.Mutex
	responses []response
	byID      map[string]int
	// sorted caches the responses' order by created_at and by updated_at
	// (indexes into responses), rebuilt after a change: a listing of a
	// large history pages through it instead of sorting every time.
	sorted map[string][]int
	unsubs []map[string]any
	gate   fake.Gate
	now    func() time.Time
}

// response is a stored response with its times read once.
type response struct {
	data             map[string]any
	created, updated float64
}

// New returns a fake that accepts key.
func New(key string) *Fake {
	return &Fake{APIKey: key, byID: map[string]int{}, now: time.Now}
}

// order returns the responses' indexes sorted by field (created_at or
// updated_at), ascending.
func (f *Fake) order(field string) []int {
	if idx, ok := f.sorted[field]; ok {
		return idx
	}
	idx := make([]int, len(f.responses))
	for i := range idx {
		idx[i] = i
	}
	key := func(i int) float64 {
		if field == "updated_at" {
			return f.responses[i].updated
		}
		return f.responses[i].created
	}
	sort.SliceStable(idx, func(a, b int) bool { return key(idx[a]) < key(idx[b]) })
	if f.sorted == nil {
		f.sorted = map[string][]int{}
	}
	f.sorted[field] = idx
	return idx
}

// AddResponse adds (or, for a known id, replaces) a survey response as the
// API returns it with the person expanded: it needs "id" and
// "created_at"; "updated_at" defaults to created_at.
func (f *Fake) AddResponse(r map[string]any) error {
	id := fmt.Sprint(r["id"])
	if r["id"] == nil || id == "" || r["created_at"] == nil {
		return fmt.Errorf("a response needs id and created_at")
	}
	if r["updated_at"] == nil {
		r["updated_at"] = r["created_at"]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sorted = nil
	stored := response{data: r, created: num(r["created_at"]), updated: num(r["updated_at"])}
	if i, ok := f.byID[id]; ok {
		f.responses[i] = stored
		return nil
	}
	f.byID[id] = len(f.responses)
	f.responses = append(f.responses, stored)
	return nil
}

// AddUnsubscribe adds an unsubscribe {person_id, email, name, unsubscribed_at}.
func (f *Fake) AddUnsubscribe(u map[string]any) error {
	if u["unsubscribed_at"] == nil || (u["person_id"] == nil && u["email"] == nil) {
		return fmt.Errorf("an unsubscribe needs person_id or email, and unsubscribed_at")
	}
	f.mu.Lock()
	f.unsubs = append(f.unsubs, u)
	f.mu.Unlock()
	return nil
}

// Fail queues a failure (matched against the request URL).
func (f *Fake) Fail(fl fake.Failure) { f.mu.Lock(); f.gate.Failures.Add(fl); f.mu.Unlock() }

// Stats is what the fake saw.
type Stats struct {
	fake.Traffic
	Responses      int `json:"responses"`
	Unsubscribes   int `json:"unsubscribes"`
	PerSecondLimit int `json:"per_second_limit"`
}

// Stats returns the counts.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Stats{Traffic: f.gate.Traffic(), Responses: len(f.responses), Unsubscribes: len(f.unsubs), PerSecondLimit: f.PerSecond}
}

func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/readyz":
		w.WriteHeader(http.StatusOK)
		return
	case r.URL.Path == "/_fake/stats":
		writeJSON(w, http.StatusOK, f.Stats())
		return
	case r.URL.Path == "/_fake/responses" && r.Method == http.MethodPost:
		var item map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&item); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "message": err.Error()})
			return
		}
		if err := f.AddResponse(item); err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"status": 422, "message": err.Error()})
			return
		}
		w.WriteHeader(http.StatusCreated)
		return
	case r.URL.Path == "/_fake/unsubscribes" && r.Method == http.MethodPost:
		var item map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&item); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "message": err.Error()})
			return
		}
		if err := f.AddUnsubscribe(item); err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"status": 422, "message": err.Error()})
			return
		}
		w.WriteHeader(http.StatusCreated)
		return
	}
	f.Latency.Wait(r.Context())
	user, pass, ok := r.BasicAuth()
	if !ok || user != f.APIKey || pass != "" {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"status": 401, "message": "Invalid API key"})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.gate.Admit(w, r, f.now(), f.PerSecond, func(status int) {
		writeJSON(w, status, map[string]any{"status": status, "message": http.StatusText(status)})
	}) {
		return
	}
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"status": 405, "message": "Method Not Allowed"})
		return
	}
	q := r.URL.Query()
	perPage, page, err := paging(q)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"status": 422, "message": "Record invalid", "errors": map[string][]string{"per_page": {err.Error()}}})
		return
	}
	switch r.URL.Path {
	case "/v1/survey_responses.json":
		f.listResponses(w, q, perPage, page)
	case "/v1/unsubscribes.json":
		var out []map[string]any
		for _, u := range f.unsubs {
			if inRange(u["unsubscribed_at"], q.Get("since"), q.Get("until")) {
				out = append(out, u)
			}
		}
		sort.SliceStable(out, func(i, j int) bool { return num(out[i]["unsubscribed_at"]) < num(out[j]["unsubscribed_at"]) })
		writeJSON(w, http.StatusOK, pageOf(out, perPage, page))
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"status": 404, "message": "Not Found"})
	}
}

func (f *Fake) listResponses(w http.ResponseWriter, q map[string][]string, perPage, page int) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	expand := false
	for _, e := range q["expand[]"] {
		expand = expand || e == "person"
	}
	order := get("order")
	field := "created_at"
	if strings.HasSuffix(order, ":updated_at") {
		field = "updated_at"
	}
	idx := f.order(field)
	bound := func(k string, def float64) float64 {
		if v, err := strconv.ParseFloat(get(k), 64); err == nil {
			return v
		}
		return def
	}
	cs, cu := bound("since", math.Inf(-1)), bound("until", math.Inf(1))
	us, uu := bound("updated_since", math.Inf(-1)), bound("updated_until", math.Inf(1))
	// Only the requested page is collected (a large history is paged
	// through without copying it per request).
	first, out, seen := (page-1)*perPage, []map[string]any{}, 0
	desc := strings.HasPrefix(order, "desc")
	for k := range idx {
		i := idx[k]
		if desc {
			i = idx[len(idx)-1-k]
		}
		r := f.responses[i]
		if r.created < cs || r.created > cu || r.updated < us || r.updated > uu {
			continue
		}
		if seen >= first {
			out = append(out, r.data)
			if len(out) == perPage {
				break
			}
		}
		seen++
	}
	items := out

	for i, r := range items {
		c := make(map[string]any, len(r))
		for k, v := range r {
			c[k] = v
		}
		if p, ok := c["person"].(map[string]any); ok && !expand {
			c["person"] = fmt.Sprint(p["id"])
		}
		items[i] = c
	}
	writeJSON(w, http.StatusOK, items)
}

func paging(q map[string][]string) (perPage, page int, err error) {
	perPage, page = 20, 1
	if v := q["per_page"]; len(v) > 0 {
		if perPage, err = strconv.Atoi(v[0]); err != nil || perPage < 1 || perPage > 100 {
			return 0, 0, fmt.Errorf("must be between 1 and 100")
		}
	}
	if v := q["page"]; len(v) > 0 {
		if page, err = strconv.Atoi(v[0]); err != nil || page < 1 {
			return 0, 0, fmt.Errorf("page must be a positive number")
		}
	}
	return perPage, page, nil
}

func pageOf(items []map[string]any, perPage, page int) []map[string]any {
	start := (page - 1) * perPage
	if start >= len(items) {
		return []map[string]any{}
	}
	return append([]map[string]any(nil), items[start:min(len(items), start+perPage)]...)
}

// inRange: v (unix seconds) within [since, until], either bound optional.
func inRange(v any, since, until string) bool {
	t := num(v)
	if s, err := strconv.ParseFloat(since, 64); err == nil && t < s {
		return false
	}
	if u, err := strconv.ParseFloat(until, 64); err == nil && t > u {
		return false
	}
	return true
}

func num(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case json.Number:
		f, _ := x.Float64()
		return f
	case string:
		f, _ := strconv.ParseFloat(x, 64)
		return f
	}
	return 0
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
