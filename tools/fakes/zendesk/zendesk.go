// Package zendeskfake is a local Zendesk Support API for tests and `make
// run`, behaving as Zendesk documents where closedloop depends on it
// (../shared/design/VENDOR_APIS.md §2):
//
//   - auth: Basic "{email}/token:{api_token}" or "Bearer {oauth token}";
//     anything else 401 {"error":"Couldn't authenticate you"};
//   - POST /api/v2/tickets.json creates a ticket (201 {"ticket":…}); a
//     ticket without subject or comment body, with a priority outside
//     urgent|high|normal|low, or a requester without a valid email is 422
//     {"error":"RecordInvalid","description":…,"details":{field:[…]}};
//   - Idempotency-Key on creation: the same key within 2 hours returns the
//     stored response with "x-idempotency-lookup: hit" (first: "miss");
//     the same key with another body is 400 IdempotentRequestError;
//   - GET /api/v2/tickets.json?external_id=X lists the tickets with that
//     external id (not unique), cursor-paged (page[size] ≤ 100);
//   - PUT /api/v2/tickets/{id}.json adds a comment (or changes the status);
//     a closed ticket answers 422;
//   - a per-account limit of requests per minute (Team plan: 200) answered
//     429 with Retry-After and the X-Rate-Limit headers;
//   - failures on command (5xx, 429, 422 for a request that mentions a text);
//   - outbound webhooks (Hooks), as a Zendesk webhook subscribed to ticket
//     events sends them: zen:event-type:ticket.created, .comment_added
//     (author.is_staff, is_public) and .status_changed, signed
//     X-Zendesk-Webhook-Signature = base64 HMAC-SHA256(secret, timestamp +
//     body) with the RFC 3339 X-Zendesk-Webhook-Signature-Timestamp (Signer);
//   - an agent (Agent) who replies to and solves a share of the tickets.
package zendeskfake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
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
	ID         int64     `json:"id"`
	URL        string    `json:"url"`
	ExternalID string    `json:"external_id,omitempty"`
	Subject    string    `json:"subject"`
	Status     string    `json:"status"`
	Priority   string    `json:"priority,omitempty"`
	Type       string    `json:"type,omitempty"`
	Tags       []string  `json:"tags"`
	GroupID    int64     `json:"group_id,omitempty"`
	BrandID    int64     `json:"brand_id,omitempty"`
	Requester  Requester `json:"requester"`
	Comments   []Comment `json:"comments"`
	// FollowUpOf is the closed ticket this one follows up.
	FollowUpOf int64     `json:"via_followup_source_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// IdempotencyKey is the key the ticket was created with.
	IdempotencyKey string `json:"-"`
}

// Requester is who the ticket is from.
type Requester struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

// Comment is one comment of a ticket.
type Comment struct {
	Body   string    `json:"body"`
	Public bool      `json:"public"`
	At     time.Time `json:"created_at"`
}

// Failure answers the next N matching requests with Status.
type Failure = fake.Failure

type idem struct {
	bodyHash [32]byte
	at       time.Time
	status   int
	resp     []byte
}

// Server is the fake.
type Server struct {
	// PerMinute is the account's request limit per minute (default 200, the
	// Team plan).
	PerMinute int
	// Out, when set, gets one line per created ticket and comment.
	Out io.Writer
	Now func() time.Time

	mu      sync.Mutex
	users   map[string]string // email → API token
	oauth   map[string]bool
	tickets []*Ticket
	byID    map[int64]*Ticket
	idem    map[string]*idem
	fails   fake.Failures
	limit   fake.MinuteLimit
	creates int

	// Hooks, when set, receives the ticket events (webhooks out).
	Hooks *fake.Hooks
	// Agent, when set, is given every new ticket.
	Agent   *fake.Agent
	eventID int64
	epoch   int64
	latency fake.Latency
}

// New returns a fake with no credentials.
func New() *Server {
	return &Server{PerMinute: 200, Now: time.Now, users: map[string]string{}, oauth: map[string]bool{},
		byID: map[int64]*Ticket{}, idem: map[string]*idem{}, epoch: time.Now().UnixNano()}
}

// AddAPIToken lets email authenticate with an API token.
func (s *Server) AddAPIToken(email, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[email] = token
}

// RevokeAPIToken makes email's token fail (401).
func (s *Server) RevokeAPIToken(email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.users, email)
}

// AddOAuthToken accepts a bearer token.
func (s *Server) AddOAuthToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oauth[token] = true
}

// SetLatency delays every API answer by d (0: none), as a slow vendor.
func (s *Server) SetLatency(d time.Duration) { s.latency.Set(d) }

// Fail queues a failure.
func (s *Server) Fail(f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails.Add(f)
}

// ClearFailures drops the queued failures.
func (s *Server) ClearFailures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails.Clear()
}

// Tickets returns a copy of every ticket, in creation order.
func (s *Server) Tickets() []Ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Ticket, len(s.tickets))
	for i, t := range s.tickets {
		out[i] = *t
		out[i].Comments = append([]Comment(nil), t.Comments...)
		out[i].Tags = append([]string(nil), t.Tags...)
	}
	return out
}

// SetStatus changes a ticket's status as an agent would (solved, closed).
func (s *Server) SetStatus(id int64, status string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.byID[id]
	if t == nil {
		return false
	}
	s.setStatus(t, status)
	return true
}

// AgentReply adds an agent's public reply to a ticket (opening a new one).
func (s *Server) AgentReply(id int64, body string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.byID[id]
	if t == nil || t.Status == "closed" {
		return false
	}
	s.comment(t, body, true)
	if t.Status == "new" {
		s.setStatus(t, "open")
	}
	return true
}

// NewAgent is an agent working this fake's tickets: a public reply, then
// solved.
func (s *Server) NewAgent(share float64, replyAfter, solveAfter time.Duration) *fake.Agent {
	return &fake.Agent{Share: share, ReplyAfter: replyAfter, SolveAfter: solveAfter,
		Reply: func(id int64) {
			s.AgentReply(id, "Hi, thanks for telling us. We are on it and will follow up here.")
		},
		Solve: func(id int64) { s.SetStatus(id, "solved") },
	}
}

// WebhooksTo sends the ticket events to url, signed with secret (Hooks).
func (s *Server) WebhooksTo(url, secret string) *fake.Hooks {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Hooks = &fake.Hooks{URL: url, Sign: Signer(secret)}
	return s.Hooks
}

// Signer signs outbound webhooks as Zendesk does with a webhook's signing
// secret.
func Signer(secret string) func(body []byte, now time.Time) http.Header {
	return func(body []byte, now time.Time) http.Header {
		ts := now.UTC().Format(time.RFC3339)
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(ts))
		m.Write(body)
		return http.Header{
			"X-Zendesk-Webhook-Signature":           {base64.StdEncoding.EncodeToString(m.Sum(nil))},
			"X-Zendesk-Webhook-Signature-Timestamp": {ts},
			"X-Zendesk-Webhook-Id":                  {"01JDFAKEZENDESKWEBHOOK0001"},
			"X-Zendesk-Account-Id":                  {"1"},
			"User-Agent":                            {"Zendesk Webhook"},
		}
	}
}

// setStatus changes the status and sends ticket.status_changed.
func (s *Server) setStatus(t *Ticket, status string) {
	if t.Status == status {
		return
	}
	prev := t.Status
	t.Status, t.UpdatedAt = status, s.Now().UTC()
	if s.Out != nil && (status == "solved" || status == "closed") {
		fmt.Fprintf(s.Out, "  ✅ zendesk #%d %s by the agent\n", t.ID, status)
	}
	s.event(t, "status_changed", map[string]any{"current": strings.ToUpper(status), "previous": strings.ToUpper(prev)})
}

// comment adds a comment by the API user (an agent) and sends
// ticket.comment_added.
func (s *Server) comment(t *Ticket, body string, public bool) {
	now := s.Now().UTC()
	t.Comments = append(t.Comments, Comment{Body: body, Public: public, At: now})
	t.UpdatedAt = now
	if s.Out != nil {
		what := "comment"
		if public {
			what = "agent replied"
		}
		fmt.Fprintf(s.Out, "  🎫 zendesk #%d %s: %s\n", t.ID, what, firstLine(body))
	}
	s.event(t, "comment_added", map[string]any{"comment": map[string]any{
		"id": strconv.Itoa(len(t.Comments)), "body": body, "is_public": public,
		"author": map[string]any{"id": "1", "is_staff": true, "name": "closedloop fake agent"}}})
}

// event sends a ticket event (zen:event-type:ticket.<typ>) to Hooks.
func (s *Server) event(t *Ticket, typ string, event map[string]any) {
	if s.Hooks == nil {
		return
	}
	s.eventID++
	now := s.Now().UTC()
	tags := t.Tags
	if tags == nil {
		tags = []string{}
	}
	body, _ := json.Marshal(map[string]any{
		"type": "zen:event-type:ticket." + typ, "account_id": 1, "id": fmt.Sprintf("zdfake-%x-%d", s.epoch, s.eventID),
		"time": now.Format(time.RFC3339), "zendesk_event_version": "2022-11-06", "subject": fmt.Sprintf("zen:ticket:%d", t.ID),
		"detail": map[string]any{"id": strconv.FormatInt(t.ID, 10), "external_id": t.ExternalID, "status": strings.ToUpper(t.Status),
			"subject": t.Subject, "priority": strings.ToUpper(t.Priority), "tags": tags, "requester_id": "2",
			"created_at": t.CreatedAt.Format(time.RFC3339), "updated_at": t.UpdatedAt.Format(time.RFC3339), "via": map[string]any{"channel": "api"}},
		"event": event,
	})
	s.Hooks.Send(body)
}

var (
	ticketPath = regexp.MustCompile(`^/api/v2/tickets/(\d+)\.json$`)
	priorities = map[string]bool{"": true, "urgent": true, "high": true, "normal": true, "low": true}
	types      = map[string]bool{"": true, "problem": true, "incident": true, "question": true, "task": true}
	statuses   = map[string]bool{"new": true, "open": true, "pending": true, "hold": true, "solved": true, "closed": true}
)

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/readyz" { // the fake's own readiness, for the tools that start it
		w.WriteHeader(http.StatusOK)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s.latency.Wait(r.Context())
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.authenticated(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Web Password"`)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "Couldn't authenticate you"})
		return
	}
	if f := s.fails.Take(r.URL.String(), body); f != nil {
		if f.Status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", strconv.Itoa(max(f.RetryAfter, 1)))
		}
		if f.Status == http.StatusUnprocessableEntity {
			writeJSON(w, f.Status, recordInvalid("base", "Injected validation error"))
			return
		}
		writeJSON(w, f.Status, map[string]any{"error": http.StatusText(f.Status)})
		return
	}
	if retry := s.limited(w); retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": "APIRateLimitExceeded", "description": "Number of allowed API requests per minute exceeded"})
		return
	}
	switch {
	case r.URL.Path == "/api/v2/tickets.json" && r.Method == http.MethodPost:
		s.create(w, r, body)
	case r.URL.Path == "/api/v2/tickets.json" && r.Method == http.MethodGet:
		s.list(w, r)
	case ticketPath.MatchString(r.URL.Path) && (r.Method == http.MethodPut || r.Method == http.MethodGet):
		id, _ := strconv.ParseInt(ticketPath.FindStringSubmatch(r.URL.Path)[1], 10, 64)
		t := s.byID[id]
		if t == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"error": "RecordNotFound", "description": "Not found"})
			return
		}
		if r.Method == http.MethodGet {
			writeJSON(w, http.StatusOK, map[string]any{"ticket": t})
			return
		}
		s.update(w, t, body)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "InvalidEndpoint", "description": "Not found"})
	}
}

func (s *Server) authenticated(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		return s.oauth[tok]
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	email, isToken := strings.CutSuffix(user, "/token")
	return isToken && s.users[email] != "" && s.users[email] == pass
}

// limited counts the request against the account's minute and returns the
// seconds to wait when it is over (0: allowed). The rate headers are set
// on every answer.
func (s *Server) limited(w http.ResponseWriter) int {
	remaining, reset, ok := s.limit.Take(s.Now(), s.PerMinute)
	w.Header().Set("X-Rate-Limit", strconv.Itoa(s.PerMinute))
	w.Header().Set("ratelimit-reset", strconv.Itoa(reset))
	w.Header().Set("X-Rate-Limit-Remaining", strconv.Itoa(remaining))
	if !ok {
		return reset
	}
	return 0
}

type ticketRequest struct {
	Ticket *struct {
		Subject string `json:"subject"`
		Comment *struct {
			Body     string `json:"body"`
			HTMLBody string `json:"html_body"`
			Public   *bool  `json:"public"`
		} `json:"comment"`
		Requester *struct {
			Email string `json:"email"`
			Name  string `json:"name"`
		} `json:"requester"`
		ExternalID     string   `json:"external_id"`
		Tags           []string `json:"tags"`
		AdditionalTags []string `json:"additional_tags"`
		FollowUpOf     int64    `json:"via_followup_source_id"`
		Priority       string   `json:"priority"`
		Type           string   `json:"type"`
		Status         string   `json:"status"`
		GroupID        int64    `json:"group_id"`
		BrandID        int64    `json:"brand_id"`
	} `json:"ticket"`
}

func recordInvalid(field, desc string) map[string]any {
	return map[string]any{"error": "RecordInvalid", "description": "Record validation errors",
		"details": map[string]any{field: []map[string]any{{"description": desc, "error": "InvalidValue"}}}}
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, body []byte) {
	key := r.Header.Get("Idempotency-Key")
	sum := sha256.Sum256(body)
	if key != "" {
		if len(key) > 255 {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "IdempotentRequestError", "description": "Idempotency-Key is longer than 255 characters"})
			return
		}
		if prev := s.idem[key]; prev != nil && s.Now().Sub(prev.at) < 2*time.Hour {
			if prev.bodyHash != sum {
				writeJSON(w, http.StatusBadRequest, map[string]any{"error": "IdempotentRequestError", "description": "The idempotency key was used with another request body"})
				return
			}
			w.Header().Set("x-idempotency-lookup", "hit")
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(prev.status)
			_, _ = w.Write(prev.resp)
			return
		}
		w.Header().Set("x-idempotency-lookup", "miss")
	}
	var req ticketRequest
	if err := json.Unmarshal(body, &req); err != nil || req.Ticket == nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "InvalidJSON", "description": "The request body is not a ticket"})
		return
	}
	in := req.Ticket
	var invalid map[string]any
	switch {
	case in.Comment == nil || strings.TrimSpace(in.Comment.Body) == "" && strings.TrimSpace(in.Comment.HTMLBody) == "":
		invalid = recordInvalid("description", "Description: cannot be blank")
	case !priorities[in.Priority]:
		invalid = recordInvalid("priority", "Priority: is not one of urgent, high, normal, low")
	case !types[in.Type]:
		invalid = recordInvalid("type", "Type: is not one of problem, incident, question, task")
	case in.Requester == nil:
		invalid = recordInvalid("requester", "Requester: cannot be blank")
	case in.FollowUpOf != 0 && (s.byID[in.FollowUpOf] == nil || s.byID[in.FollowUpOf].Status != "closed"):
		invalid = recordInvalid("via_followup_source_id", "Follow-up source: must be a closed ticket")
	}
	if invalid == nil {
		if _, err := mail.ParseAddress(in.Requester.Email); err != nil || strings.ContainsAny(in.Requester.Email, " <>") {
			invalid = recordInvalid("requester", "Requester: Email is invalid")
		}
	}
	if invalid != nil {
		writeJSON(w, http.StatusUnprocessableEntity, invalid)
		return
	}
	now := s.Now().UTC()
	id := int64(len(s.tickets) + 1)
	subject := in.Subject
	if subject == "" {
		subject = firstLine(in.Comment.Body)
	}
	public := in.Comment.Public == nil || *in.Comment.Public
	t := &Ticket{ID: id, URL: fmt.Sprintf("%s/api/v2/tickets/%d.json", base(r), id), ExternalID: in.ExternalID, Subject: subject,
		Status: firstNonEmpty(in.Status, "new"), Priority: in.Priority, Type: in.Type, Tags: in.Tags, GroupID: in.GroupID, BrandID: in.BrandID,
		Requester: Requester{Email: in.Requester.Email, Name: in.Requester.Name},
		Comments:  []Comment{{Body: firstNonEmpty(in.Comment.Body, in.Comment.HTMLBody), Public: public, At: now}}, FollowUpOf: in.FollowUpOf,
		CreatedAt: now, UpdatedAt: now, IdempotencyKey: key}
	s.tickets = append(s.tickets, t)
	s.byID[id] = t
	resp, _ := json.Marshal(map[string]any{"ticket": t})
	if key != "" {
		s.idem[key] = &idem{bodyHash: sum, at: s.Now(), status: http.StatusCreated, resp: resp}
	}
	if s.Out != nil {
		fmt.Fprintf(s.Out, "  🎫 zendesk #%d %-6s %s (%s) %s\n", id, firstNonEmpty(t.Priority, "-"), t.Subject, t.Requester.Email, t.ExternalID)
	}
	s.event(t, "created", map[string]any{"current": map[string]any{"status": strings.ToUpper(t.Status)}})
	if s.Agent != nil {
		s.Agent.Assign(id)
	}
	w.Header().Set("Location", t.URL)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(resp)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	ext := r.URL.Query().Get("external_id")
	size := 100
	if v := r.URL.Query().Get("page[size]"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "InvalidPaginationParameter", "description": "page[size] must be 1 to 100"})
			return
		}
		size = n
	}
	after := int64(0)
	if v := r.URL.Query().Get("page[after]"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "InvalidPaginationParameter", "description": "page[after] is not a cursor"})
			return
		}
		after, _ = strconv.ParseInt(string(b), 10, 64)
	}
	var page []*Ticket
	more := false
	for _, t := range s.tickets {
		if t.ID <= after || ext != "" && t.ExternalID != ext {
			continue
		}
		if len(page) == size {
			more = true
			break
		}
		page = append(page, t)
	}
	meta := map[string]any{"has_more": more}
	links := map[string]any{}
	if more {
		cursor := base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(page[len(page)-1].ID, 10)))
		meta["after_cursor"] = cursor
		q := r.URL.Query()
		q.Set("page[after]", cursor)
		links["next"] = base(r) + r.URL.Path + "?" + q.Encode()
	}
	if page == nil {
		page = []*Ticket{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tickets": page, "meta": meta, "links": links})
}

func (s *Server) update(w http.ResponseWriter, t *Ticket, body []byte) {
	var req ticketRequest
	if err := json.Unmarshal(body, &req); err != nil || req.Ticket == nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "InvalidJSON", "description": "The request body is not a ticket"})
		return
	}
	if t.Status == "closed" {
		writeJSON(w, http.StatusUnprocessableEntity, recordInvalid("status", "Status: closed prevents ticket update"))
		return
	}
	in := req.Ticket
	if in.Status != "" && !statuses[in.Status] {
		writeJSON(w, http.StatusUnprocessableEntity, recordInvalid("status", "Status: is not valid"))
		return
	}
	now := s.Now().UTC()
	if in.Comment != nil && firstNonEmpty(in.Comment.Body, in.Comment.HTMLBody) != "" {
		s.comment(t, firstNonEmpty(in.Comment.Body, in.Comment.HTMLBody), in.Comment.Public == nil || *in.Comment.Public)
	}
	if in.Status != "" {
		s.setStatus(t, in.Status)
	}
	if in.Tags != nil {
		t.Tags = in.Tags // tags replace the list, additional_tags add to it
	}
	t.Tags = append(t.Tags, in.AdditionalTags...)
	t.UpdatedAt = now
	writeJSON(w, http.StatusOK, map[string]any{"ticket": t})
}

func base(r *http.Request) string { return "http://" + r.Host }

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
