// Package typeformfake is a local Typeform Responses API for tests and
// `make run`, behaving as Typeform documents where closedloop depends on it
// (../shared/design/VENDOR_APIS.md §7):
//
//   - auth: Authorization: Bearer <personal access token>; anything else
//     401 {"code":"AUTHENTICATION_FAILED",…};
//   - GET /forms/{form_id}/responses: page_size (default 25, at most 1000,
//     more is 400 VALIDATION_ERROR), since/until inclusive (unix seconds
//     or 2020-03-20T14:00:59) on submitted_at (landed_at for partial
//     responses), response_type (completed by default; partial, started),
//     before/after = a response token, exclusive, in the order the
//     responses were processed (before: the older ones, newest first;
//     after: the newer ones, oldest first), not with sort (400); without
//     them sort (default submitted_at,desc); {total_items, page_count,
//     items}; an unknown form 404 FORM_NOT_FOUND;
//   - a per-second limit (PerSecond, Typeform's is 2) answered 429 with
//     Retry-After; Stats has the most requests let through in one second;
//   - latency and failures on command; GET /_fake/stats; POST
//     /_fake/forms/{form_id}/responses adds a response (the generator adds
//     each one it makes).
package typeformfake

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
	Token     string
	PerSecond int
	Latency   fake.Latency

	mu    sync.Mutex
	forms map[string][]map[string]any // processing order
	gate  fake.Gate
	now   func() time.Time
}

// New returns a fake accepting token, limited to Typeform's 2 requests a
// second.
func New(token string) *Fake {
	return &Fake{Token: token, PerSecond: 2, forms: map[string][]map[string]any{}, now: time.Now}
}

// AddResponse adds a response to form (processed now, after every earlier
// one); a response with a known token replaces it in place (a partial one
// completed). It needs token and landed_at; submitted_at absent is
// "0001-01-01T00:00:00Z", as Typeform shows an unsubmitted response.
func (f *Fake) AddResponse(form string, item map[string]any) error {
	tok, _ := item["token"].(string)
	if tok == "" || item["landed_at"] == nil {
		return fmt.Errorf("a response needs token and landed_at")
	}
	if item["submitted_at"] == nil {
		item["submitted_at"] = "0001-01-01T00:00:00Z"
	}
	item["response_id"] = tok
	if item["landing_id"] == nil {
		item["landing_id"] = tok
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	list := f.forms[form]
	for i, it := range list {
		if it["token"] == tok {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	f.forms[form] = append(list, item)
	return nil
}

// Fail queues a failure (matched against the request URL).
func (f *Fake) Fail(fl fake.Failure) { f.mu.Lock(); f.gate.Failures.Add(fl); f.mu.Unlock() }

// Stats is what the fake saw.
type Stats struct {
	fake.Traffic
	Responses      int `json:"responses"`
	PerSecondLimit int `json:"per_second_limit"`
}

// Stats returns the counts.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, l := range f.forms {
		n += len(l)
	}
	return Stats{Traffic: f.gate.Traffic(), Responses: n, PerSecondLimit: f.PerSecond}
}

func tfError(w http.ResponseWriter, status int, code, desc string, details ...map[string]string) {
	body := map[string]any{"code": code, "description": desc}
	if len(details) > 0 {
		body["details"] = details
	}
	writeJSON(w, status, body)
}

func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.URL.Path == "/readyz":
		w.WriteHeader(http.StatusOK)
		return
	case r.URL.Path == "/_fake/stats":
		writeJSON(w, http.StatusOK, f.Stats())
		return
	case len(parts) == 4 && parts[0] == "_fake" && parts[1] == "forms" && parts[3] == "responses" && r.Method == http.MethodPost:
		var item map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&item); err != nil {
			tfError(w, http.StatusBadRequest, "VALIDATION_ERROR", err.Error())
			return
		}
		if err := f.AddResponse(parts[2], item); err != nil {
			tfError(w, http.StatusBadRequest, "VALIDATION_ERROR", err.Error())
			return
		}
		w.WriteHeader(http.StatusCreated)
		return
	}
	f.Latency.Wait(r.Context())
	if r.Header.Get("Authorization") != "Bearer "+f.Token || f.Token == "" {
		tfError(w, http.StatusUnauthorized, "AUTHENTICATION_FAILED", "Authentication credentials not found on the Request Headers")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.gate.Admit(w, r, f.now(), f.PerSecond, func(status int) {
		code := "SERVER_ERROR"
		if status == http.StatusTooManyRequests {
			code = "RATE_LIMIT_EXCEEDED"
		}
		tfError(w, status, code, http.StatusText(status))
	}) {
		return
	}
	if len(parts) != 3 || parts[0] != "forms" || parts[2] != "responses" || r.Method != http.MethodGet {
		tfError(w, http.StatusNotFound, "NOT_FOUND", "Endpoint not found")
		return
	}
	list, ok := f.forms[parts[1]]
	if !ok {
		tfError(w, http.StatusNotFound, "FORM_NOT_FOUND", "Non existing form with uid "+parts[1])
		return
	}
	f.list(w, r, list)
}

func (f *Fake) list(w http.ResponseWriter, r *http.Request, list []map[string]any) {
	q := r.URL.Query()
	pageSize := 25
	if v := q.Get("page_size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			tfError(w, http.StatusBadRequest, "VALIDATION_ERROR", "The request validation failed",
				map[string]string{"code": "INVALID_PARAMETER", "field": "page_size", "in": "query"})
			return
		}
		pageSize = n
	}
	before, after, sortBy := q.Get("before"), q.Get("after"), q.Get("sort")
	if (before != "" || after != "") && sortBy != "" {
		tfError(w, http.StatusBadRequest, "VALIDATION_ERROR", "before and after cannot be used with sort",
			map[string]string{"code": "INVALID_PARAMETER", "field": "sort", "in": "query"})
		return
	}
	types := map[string]bool{"completed": true}
	if v := q.Get("response_type"); v != "" {
		types = map[string]bool{}
		for _, t := range strings.Split(v, ",") {
			types[strings.TrimSpace(t)] = true
		}
	}
	since, err1 := parseTime(q.Get("since"))
	until, err2 := parseTime(q.Get("until"))
	if err1 != nil || err2 != nil {
		tfError(w, http.StatusBadRequest, "VALIDATION_ERROR", "since and until are unix seconds or 2020-03-20T14:00:59")
		return
	}
	// Filter, keeping the processing order.
	var sel []map[string]any
	for _, it := range list {
		completed := !strings.HasPrefix(fmt.Sprint(it["submitted_at"]), "0001-")
		kind, at := "partial", fmt.Sprint(it["landed_at"])
		if completed {
			kind, at = "completed", fmt.Sprint(it["submitted_at"])
		}
		if !types[kind] {
			continue
		}
		t, err := time.Parse(time.RFC3339, at)
		if err != nil || (!since.IsZero() && t.Before(since)) || (!until.IsZero() && t.After(until)) {
			continue
		}
		sel = append(sel, it)
	}
	total := len(sel)
	var ordered []map[string]any
	switch {
	case before != "":
		i := indexOf(sel, before)
		for j := i - 1; j >= 0; j-- {
			ordered = append(ordered, sel[j])
		}
	case after != "":
		i := indexOf(sel, after)
		if i < 0 {
			i = len(sel)
		}
		ordered = append(ordered, sel[i+1:]...)
	default:
		// Ties (partial responses all show 0001-01-01) in processing order,
		// the same direction.
		for j := len(sel) - 1; j >= 0; j-- {
			ordered = append(ordered, sel[j])
		}
		field, dir, _ := strings.Cut(sortBy, ",")
		if field == "" {
			field, dir = "submitted_at", "desc"
		}
		if dir == "asc" {
			ordered = append(ordered[:0:0], sel...)
		}
		sort.SliceStable(ordered, func(a, b int) bool {
			x, y := fmt.Sprint(ordered[a][field]), fmt.Sprint(ordered[b][field])
			if dir == "asc" {
				return x < y
			}
			return x > y
		})
	}
	if len(ordered) > pageSize {
		ordered = ordered[:pageSize]
	}
	if ordered == nil {
		ordered = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_items": total, "page_count": int(math.Ceil(float64(total) / float64(pageSize))), "items": ordered})
}

// indexOf is the position of token in list; -1 when absent (before an
// unknown token lists nothing older).
func indexOf(list []map[string]any, token string) int {
	for i, it := range list {
		if it["token"] == token {
			return i
		}
	}
	return -1
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Parse("2006-01-02T15:04:05", s)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
