// Package freshdeskfake is a local Freshdesk API (v2) for tests and `make
// run`, behaving as Freshdesk documents where closedloop depends on it
// (../shared/design/VENDOR_APIS.md §3):
//
//   - auth: Basic with the API key as the user and "X" as the password;
//     anything else 401 {"code":"invalid_credentials",…};
//   - POST /api/v2/tickets creates a ticket (201); a missing requester
//     (email), subject or description, a status outside 2–5, a priority
//     outside 1–4 or an unknown custom field is 400 {"description":
//     "Validation failed","errors":[{field,message,code}]};
//   - GET /api/v2/tickets?email=X lists the requester's tickets, newest
//     first, per_page ≤ 100 with page, a Link header to the next page; those
//     created in the last 30 days, or with updated_since those updated since;
//   - GET/PUT /api/v2/tickets/{id}, POST /api/v2/tickets/{id}/notes;
//   - no idempotency: the same POST twice makes two tickets;
//   - a per-account limit per minute (Growth: 200) answered 429 with
//     Retry-After and the X-Ratelimit headers;
//   - failures on command;
//   - outbound automation webhooks (Hooks), as rules "ticket created",
//     "agent replied" and "status is Resolved/Closed" with the body template
//     of docs/destinations.md send them (unsigned: the URL carries the
//     ingest token), and an agent (Agent) who replies to and resolves a
//     share of the tickets.
package freshdeskfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
)

// Ticket is a ticket as the fake keeps it.
type Ticket struct {
	ID           int64          `json:"id"`
	Subject      string         `json:"subject"`
	Description  string         `json:"description"`
	Email        string         `json:"email"`
	Name         string         `json:"name,omitempty"`
	Status       int            `json:"status"`
	Priority     int            `json:"priority"`
	Source       int            `json:"source"`
	Type         string         `json:"type,omitempty"`
	GroupID      int64          `json:"group_id,omitempty"`
	Tags         []string       `json:"tags"`
	CustomFields map[string]any `json:"custom_fields"`
	Notes        []Note         `json:"-"`
	CreatedAt    time.Time      `json:"created_at"`
	UpdatedAt    time.Time      `json:"updated_at"`
}

// Note is a note on a ticket.
type Note struct {
	Body    string    `json:"body"`
	Private bool      `json:"private"`
	At      time.Time `json:"created_at"`
}

// Failure answers the next N matching requests with Status.
type Failure = fake.Failure

// Server is the fake.
type Server struct {
	// PerMinute is the account's request limit per minute (default 200).
	PerMinute int
	// CustomFields are the ticket fields the account defines (default
	// cf_closedloop_response).
	CustomFields map[string]bool
	Out          io.Writer
	Now          func() time.Time

	mu      sync.Mutex
	keys    map[string]bool
	tickets []*Ticket
	fails   fake.Failures
	limit   fake.MinuteLimit

	// Hooks, when set, receives the automation webhooks.
	Hooks *fake.Hooks
	// Agent, when set, is given every new ticket.
	Agent *fake.Agent
	// ResponseField is the custom field the webhook template reads the
	// response key from (default cf_closedloop_response).
	ResponseField string
	latency       fake.Latency
}

// New returns a fake with no API keys.
func New() *Server {
	return &Server{PerMinute: 200, CustomFields: map[string]bool{"cf_closedloop_response": true}, Now: time.Now, keys: map[string]bool{}}
}

// AddAPIKey accepts an API key.
func (s *Server) AddAPIKey(key string) { s.mu.Lock(); s.keys[key] = true; s.mu.Unlock() }

// RevokeAPIKey refuses an API key.
func (s *Server) RevokeAPIKey(key string) { s.mu.Lock(); delete(s.keys, key); s.mu.Unlock() }

// SetLatency delays every API answer by d (0: none), as a slow vendor.
func (s *Server) SetLatency(d time.Duration) { s.latency.Set(d) }

// Fail queues a failure.
func (s *Server) Fail(f Failure) { s.mu.Lock(); s.fails.Add(f); s.mu.Unlock() }

// ClearFailures drops the queued failures.
func (s *Server) ClearFailures() { s.mu.Lock(); s.fails.Clear(); s.mu.Unlock() }

// Tickets returns a copy of every ticket, with its notes, in creation order.
func (s *Server) Tickets() []Ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Ticket, len(s.tickets))
	for i, t := range s.tickets {
		out[i] = *t
		out[i].Notes = append([]Note(nil), t.Notes...)
		out[i].Tags = append([]string(nil), t.Tags...)
	}
	return out
}

// SetStatus changes a ticket's status as an agent would (4 resolved, 5 closed).
func (s *Server) SetStatus(id int64, status int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || int(id) > len(s.tickets) {
		return false
	}
	s.setStatus(s.tickets[id-1], status)
	return true
}

// AgentReply adds an agent's reply to a ticket (a public conversation, as
// POST /tickets/{id}/reply makes) and sets it pending.
func (s *Server) AgentReply(id int64, body string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || int(id) > len(s.tickets) {
		return false
	}
	t := s.tickets[id-1]
	if t.Status == 5 {
		return false
	}
	now := s.Now().UTC()
	t.Notes = append(t.Notes, Note{Body: body, Private: false, At: now})
	t.UpdatedAt = now
	if s.Out != nil {
		fmt.Fprintf(s.Out, "  📝 freshdesk #%d agent replied: %s\n", t.ID, firstLine(body))
	}
	s.webhook(t, "agent_reply")
	if t.Status == 2 {
		s.setStatus(t, 3)
	}
	return true
}

// WebhooksTo sends the automation webhooks to url (Hooks).
func (s *Server) WebhooksTo(url string) *fake.Hooks {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Hooks = &fake.Hooks{URL: url}
	return s.Hooks
}

// NewAgent is an agent working this fake's tickets: a reply, then resolved.
func (s *Server) NewAgent(share float64, replyAfter, solveAfter time.Duration) *fake.Agent {
	return &fake.Agent{Share: share, ReplyAfter: replyAfter, SolveAfter: solveAfter,
		Reply: func(id int64) { s.AgentReply(id, "Hello, thank you for your feedback. We are looking into it.") },
		Solve: func(id int64) { s.SetStatus(id, 4) },
	}
}

var statusNames = map[int]string{2: "Open", 3: "Pending", 4: "Resolved", 5: "Closed"}

// setStatus changes the status and sends the rule's webhook: resolved,
// closed, reopened (from resolved or closed).
func (s *Server) setStatus(t *Ticket, status int) {
	if t.Status == status {
		return
	}
	prev := t.Status
	t.Status, t.UpdatedAt = status, s.Now().UTC()
	switch {
	case status == 4:
		s.webhook(t, "ticket_resolved")
	case status == 5:
		s.webhook(t, "ticket_closed")
	case prev >= 4:
		s.webhook(t, "ticket_reopened")
	}
	if s.Out != nil && status >= 4 {
		fmt.Fprintf(s.Out, "  ✅ freshdesk #%d %s by the agent\n", t.ID, strings.ToLower(statusNames[status]))
	}
}

// webhook sends the automation rule's body (docs/destinations.md's
// template, its placeholders filled).
func (s *Server) webhook(t *Ticket, event string) {
	if s.Hooks == nil {
		return
	}
	field := s.ResponseField
	if field == "" {
		field = "cf_closedloop_response"
	}
	key, _ := t.CustomFields[field].(string)
	body, _ := json.Marshal(map[string]any{
		"event": event, "ticket_id": strconv.FormatInt(t.ID, 10), "ticket_status": statusNames[t.Status],
		"closedloop_response": key, "ticket_subject": t.Subject, "ticket_created_at": t.CreatedAt.Format(time.RFC3339),
		"time": s.Now().UTC().Format(time.RFC3339),
	})
	s.Hooks.Send(body)
}

var (
	ticketPath = regexp.MustCompile(`^/api/v2/tickets/(\d+)$`)
	notesPath  = regexp.MustCompile(`^/api/v2/tickets/(\d+)/notes$`)
)

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/readyz" {
		w.WriteHeader(http.StatusOK)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s.latency.Wait(r.Context())
	s.mu.Lock()
	defer s.mu.Unlock()
	if key, pass, ok := r.BasicAuth(); !ok || !s.keys[key] || pass != "X" {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"code": "invalid_credentials", "message": "You have to be logged in to perform this action."})
		return
	}
	if f := s.fails.Take(r.URL.String(), body); f != nil {
		if f.Status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", strconv.Itoa(max(f.RetryAfter, 1)))
		}
		if f.Status == http.StatusBadRequest {
			writeJSON(w, f.Status, invalid("description", "Injected validation error", "invalid_value"))
			return
		}
		writeJSON(w, f.Status, map[string]any{"code": "error", "message": http.StatusText(f.Status)})
		return
	}
	now := s.Now()
	remaining, reset, ok := s.limit.Take(now, s.PerMinute)
	w.Header().Set("X-Ratelimit-Total", strconv.Itoa(s.PerMinute))
	w.Header().Set("X-Ratelimit-Remaining", strconv.Itoa(remaining))
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(reset))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"code": "too_many_requests", "message": "You have exceeded the limit of requests per minute"})
		return
	}
	w.Header().Set("X-Ratelimit-Used-CurrentRequest", "1")
	switch {
	case r.URL.Path == "/api/v2/tickets" && r.Method == http.MethodPost:
		s.create(w, body)
	case r.URL.Path == "/api/v2/tickets" && r.Method == http.MethodGet:
		s.list(w, r)
	case ticketPath.MatchString(r.URL.Path):
		t := s.ticket(ticketPath.FindStringSubmatch(r.URL.Path)[1])
		switch {
		case t == nil:
			writeJSON(w, http.StatusNotFound, map[string]any{"code": "access_denied", "message": "no ticket"})
		case r.Method == http.MethodGet:
			writeJSON(w, http.StatusOK, t)
		case r.Method == http.MethodPut:
			var in struct {
				Tags   []string `json:"tags"`
				Status int      `json:"status"`
			}
			if json.Unmarshal(body, &in) != nil {
				writeJSON(w, http.StatusBadRequest, invalid("body", "not JSON", "invalid_json"))
				return
			}
			if in.Tags != nil {
				t.Tags = in.Tags
			}
			t.UpdatedAt = now.UTC()
			if in.Status != 0 {
				s.setStatus(t, in.Status)
			}
			writeJSON(w, http.StatusOK, t)
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	case notesPath.MatchString(r.URL.Path) && r.Method == http.MethodPost:
		t := s.ticket(notesPath.FindStringSubmatch(r.URL.Path)[1])
		if t == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"code": "access_denied", "message": "no ticket"})
			return
		}
		var in struct {
			Body    string `json:"body"`
			Private *bool  `json:"private"`
		}
		if json.Unmarshal(body, &in) != nil || strings.TrimSpace(in.Body) == "" {
			writeJSON(w, http.StatusBadRequest, invalid("body", "It should not be blank", "missing_field"))
			return
		}
		n := Note{Body: in.Body, Private: in.Private == nil || *in.Private, At: now.UTC()}
		t.Notes = append(t.Notes, n)
		t.UpdatedAt = now.UTC()
		if s.Out != nil {
			fmt.Fprintf(s.Out, "  📝 freshdesk #%d note: %s\n", t.ID, firstLine(stripTags(in.Body)))
		}
		writeJSON(w, http.StatusCreated, n)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"code": "invalid_url", "message": "no such endpoint"})
	}
}

func (s *Server) ticket(id string) *Ticket {
	n, _ := strconv.Atoi(id)
	if n < 1 || n > len(s.tickets) {
		return nil
	}
	return s.tickets[n-1]
}

func invalid(field, msg, code string) map[string]any {
	return map[string]any{"description": "Validation failed", "errors": []map[string]any{{"field": field, "message": msg, "code": code}}}
}

func (s *Server) create(w http.ResponseWriter, body []byte) {
	var in struct {
		Email        string         `json:"email"`
		Name         string         `json:"name"`
		Subject      string         `json:"subject"`
		Description  string         `json:"description"`
		Status       int            `json:"status"`
		Priority     int            `json:"priority"`
		Source       int            `json:"source"`
		Type         string         `json:"type"`
		GroupID      int64          `json:"group_id"`
		Tags         []string       `json:"tags"`
		CustomFields map[string]any `json:"custom_fields"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, invalid("body", "Request body has invalid json format", "invalid_json"))
		return
	}
	var bad map[string]any
	switch {
	case in.Email == "":
		bad = invalid("requester_id", "Please fill at least 1 of requester_id, phone, email, twitter_id, facebook_id, unique_external_id fields", "missing_field")
	case strings.TrimSpace(in.Subject) == "":
		bad = invalid("subject", "It should not be blank as this is a mandatory field", "missing_field")
	case strings.TrimSpace(in.Description) == "":
		bad = invalid("description", "It should not be blank as this is a mandatory field", "missing_field")
	case in.Status < 2 || in.Status > 5:
		bad = invalid("status", "It should be one of these values: '2,3,4,5'", "invalid_value")
	case in.Priority < 1 || in.Priority > 4:
		bad = invalid("priority", "It should be one of these values: '1,2,3,4'", "invalid_value")
	}
	if bad == nil {
		if _, err := mail.ParseAddress(in.Email); err != nil || strings.ContainsAny(in.Email, " <>") {
			bad = invalid("email", "It should be in the 'valid email address' format", "invalid_value")
		}
	}
	for k := range in.CustomFields {
		if bad == nil && !s.CustomFields[k] {
			bad = invalid(k, "Unexpected/invalid field in request", "invalid_field")
		}
	}
	if bad != nil {
		writeJSON(w, http.StatusBadRequest, bad)
		return
	}
	now := s.Now().UTC()
	t := &Ticket{ID: int64(len(s.tickets) + 1), Subject: in.Subject, Description: in.Description, Email: in.Email, Name: in.Name,
		Status: in.Status, Priority: in.Priority, Source: in.Source, Type: in.Type, GroupID: in.GroupID, Tags: in.Tags,
		CustomFields: in.CustomFields, CreatedAt: now, UpdatedAt: now}
	if t.Tags == nil {
		t.Tags = []string{}
	}
	s.tickets = append(s.tickets, t)
	if s.Out != nil {
		fmt.Fprintf(s.Out, "  🎫 freshdesk #%d p%d %s (%s)\n", t.ID, t.Priority, t.Subject, t.Email)
	}
	s.webhook(t, "ticket_created")
	if s.Agent != nil {
		s.Agent.Assign(t.ID)
	}
	writeJSON(w, http.StatusCreated, t)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	perPage, page := 30, 1
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeJSON(w, http.StatusBadRequest, invalid("per_page", "It should be a Positive Number less than or equal to 100", "invalid_value"))
			return
		}
		perPage = n
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, invalid("page", "It should be a Positive Number", "invalid_value"))
			return
		}
		page = n
	}
	// Without updated_since, only the tickets created in the last 30 days
	// are listed (as Freshdesk documents); with it, those updated since.
	createdSince, updatedSince := s.Now().Add(-30*24*time.Hour), time.Time{}
	if v := q.Get("updated_since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, invalid("updated_since", "It should be in the 'valid date time' format", "invalid_value"))
			return
		}
		createdSince, updatedSince = time.Time{}, t
	}
	var match []*Ticket
	for i := len(s.tickets) - 1; i >= 0; i-- { // newest first
		t := s.tickets[i]
		if (q.Get("email") == "" || strings.EqualFold(t.Email, q.Get("email"))) && !t.CreatedAt.Before(createdSince) && !t.UpdatedAt.Before(updatedSince) {
			match = append(match, t)
		}
	}
	from := min((page-1)*perPage, len(match))
	to := min(from+perPage, len(match))
	if to < len(match) {
		next := *r.URL
		nq := next.Query()
		nq.Set("page", strconv.Itoa(page+1))
		next.RawQuery = nq.Encode()
		w.Header().Set("Link", fmt.Sprintf("<http://%s%s>; rel=\"next\"", r.Host, next.RequestURI()))
	}
	out := match[from:to]
	if out == nil {
		out = []*Ticket{}
	}
	writeJSON(w, http.StatusOK, out)
}

var tagRE = regexp.MustCompile(`<[^>]*>`)

func stripTags(s string) string { return tagRE.ReplaceAllString(s, " ") }

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
