// Package slackfake is a local Slack for tests and `make run`: incoming
// webhooks (POST /services/T…/B…/…) and chat.postMessage (POST
// /api/chat.postMessage with a bot token), behaving as Slack documents
// (../shared/design/VENDOR_APIS.md): incoming webhooks answer 200 "ok" or a
// plain-text error (400 invalid_payload / no_text, 404 channel_not_found,
// 410 channel_is_archived, 403 action_prohibited), chat.postMessage answers
// 200 with {"ok":false,"error":…} (invalid_auth, channel_not_found,
// is_archived, no_text, invalid_blocks, msg_too_long); both answer 429 with
// Retry-After past about one message per second per channel (a short burst
// allowed). Failures are injected on command, for a channel or for messages
// that mention a text (an event id).
package slackfake

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Post is one message Slack accepted.
type Post struct {
	Channel string          `json:"channel"`
	Text    string          `json:"text"`
	Blocks  json.RawMessage `json:"blocks,omitempty"`
	API     string          `json:"api"` // "webhook" or "chat.postMessage"
	// ThreadTS is the parent message of a reply (chat.postMessage).
	ThreadTS string    `json:"thread_ts,omitempty"`
	At       time.Time `json:"at"`
	TS       string    `json:"ts"`
}

// Failure answers the next N matching requests with Status (and the error
// code as the body, or in the Web API's JSON when Status is 200).
type Failure struct {
	Channel string `json:"channel,omitempty"` // every request to the channel
	Match   string `json:"match,omitempty"`   // or every request whose body contains this
	Status  int    `json:"status"`
	Error   string `json:"error"`
	// RetryAfter (seconds) is sent with a 429.
	RetryAfter int `json:"retry_after,omitempty"`
	N          int `json:"n"`
}

type channel struct {
	archived bool
	tokens   float64
	last     time.Time
}

// Server is the fake. Configure it before serving (AddWebhook, AddToken,
// AddChannel) or through its control API.
type Server struct {
	// Rate and Burst: messages per second and burst per channel (default 1 and 3).
	Rate  float64
	Burst int
	// Out, when set, gets one line per accepted message.
	Out io.Writer
	Now func() time.Time

	mu       sync.Mutex
	hooks    map[string]string // webhook path → channel
	tokens   map[string]bool
	channels map[string]*channel
	posts    []Post
	fails    []*Failure
	seq      int
}

// New returns a fake with no channels.
func New() *Server {
	return &Server{Rate: 1, Burst: 3, Now: time.Now, hooks: map[string]string{}, tokens: map[string]bool{}, channels: map[string]*channel{}}
}

// AddChannel creates a channel (an id such as C0123456789 or a name).
func (s *Server) AddChannel(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.channels[name] == nil {
		s.channels[name] = &channel{tokens: float64(s.Burst)}
	}
}

// AddWebhook creates an incoming webhook posting to channel and returns its
// path (/services/T…/B…/…; the base URL plus the path is the secret URL).
func (s *Server) AddWebhook(channel string) string {
	s.AddChannel(channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	path := fmt.Sprintf("/services/T0000000%d/B0000000%d/fakesecret%08d", s.seq, s.seq, s.seq*7919)
	s.hooks[path] = channel
	return path
}

// AddWebhookPath creates an incoming webhook with a given path.
func (s *Server) AddWebhookPath(channel, path string) {
	s.AddChannel(channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks[path] = channel
}

// AddToken accepts a bot token for chat.postMessage.
func (s *Server) AddToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = true
}

// Archive archives (or unarchives) a channel.
func (s *Server) Archive(name string, archived bool) {
	s.AddChannel(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels[name].archived = archived
}

// Fail adds a failure.
func (s *Server) Fail(f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails = append(s.fails, &f)
}

// ClearFailures drops every injected failure.
func (s *Server) ClearFailures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails = nil
}

// Posts returns the accepted messages.
func (s *Server) Posts() []Post {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Post(nil), s.posts...)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/services/"):
		s.webhook(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/api/chat.postMessage":
		s.postMessage(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/readyz":
		_, _ = io.WriteString(w, "ok\n")
	case r.Method == http.MethodGet && r.URL.Path == "/control/messages":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Posts())
	case r.Method == http.MethodPost && r.URL.Path == "/control/fail":
		var f Failure
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil || f.N < 1 {
			http.Error(w, "a failure needs status, error and n ≥ 1", http.StatusBadRequest)
			return
		}
		s.Fail(f)
	case r.Method == http.MethodPost && r.URL.Path == "/control/archive":
		var a struct {
			Channel  string `json:"channel"`
			Archived bool   `json:"archived"`
		}
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil || a.Channel == "" {
			http.Error(w, "{channel, archived}", http.StatusBadRequest)
			return
		}
		s.Archive(a.Channel, a.Archived)
	default:
		http.NotFound(w, r)
	}
}

type payload struct {
	Channel  string          `json:"channel"`
	Text     string          `json:"text"`
	Blocks   json.RawMessage `json:"blocks"`
	ThreadTS string          `json:"thread_ts"`
}

// read decodes a message; "" when it is valid, else Slack's error code.
func read(r *http.Request) (payload, []byte, string) {
	var p payload
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(body, &p) != nil {
		return p, body, "invalid_payload"
	}
	if strings.TrimSpace(p.Text) == "" && len(p.Blocks) == 0 {
		return p, body, "no_text"
	}
	if len(p.Blocks) > 0 {
		var blocks []map[string]any
		if json.Unmarshal(p.Blocks, &blocks) != nil || len(blocks) > 50 {
			return p, body, "invalid_blocks"
		}
		for _, b := range blocks {
			if _, ok := b["type"].(string); !ok {
				return p, body, "invalid_blocks"
			}
		}
	}
	if len([]rune(p.Text)) > 40000 {
		return p, body, "msg_too_long"
	}
	return p, body, ""
}

// injected returns the failure for a request, consuming one of its N.
func (s *Server) injected(channel string, body []byte) *Failure {
	for i, f := range s.fails {
		if (f.Channel != "" && f.Channel == channel) || (f.Match != "" && strings.Contains(string(body), f.Match)) {
			f.N--
			if f.N <= 0 {
				s.fails = append(s.fails[:i], s.fails[i+1:]...)
			}
			return f
		}
	}
	return nil
}

// allow takes a token of the channel's bucket; false with the seconds to wait.
func (s *Server) allow(c *channel) (bool, int) {
	now := s.Now()
	if !c.last.IsZero() {
		c.tokens = math.Min(float64(s.Burst), c.tokens+now.Sub(c.last).Seconds()*s.Rate)
	}
	c.last = now
	if c.tokens >= 1 {
		c.tokens--
		return true, 0
	}
	return false, int(math.Ceil((1 - c.tokens) / s.Rate))
}

func (s *Server) accept(channel string, p payload, api string) string {
	s.seq++
	ts := strconv.FormatInt(s.Now().Unix(), 10) + "." + fmt.Sprintf("%06d", s.seq)
	s.posts = append(s.posts, Post{Channel: channel, Text: p.Text, Blocks: p.Blocks, API: api, At: s.Now(), TS: ts, ThreadTS: p.ThreadTS})
	if s.Out != nil {
		fmt.Fprintf(s.Out, "  ✉ slack #%s  %s\n", channel, strings.ReplaceAll(p.Text, "\n", " "))
	}
	return ts
}

func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	channel, ok := s.hooks[r.URL.Path]
	if !ok {
		plain(w, http.StatusForbidden, "no_service", 0)
		return
	}
	p, body, bad := read(r)
	if f := s.injected(channel, body); f != nil {
		plain(w, f.Status, f.Error, f.RetryAfter)
		return
	}
	c := s.channels[channel]
	switch {
	case bad != "":
		plain(w, http.StatusBadRequest, bad, 0)
	case c.archived:
		plain(w, http.StatusGone, "channel_is_archived", 0)
	default:
		if ok, wait := s.allow(c); !ok {
			plain(w, http.StatusTooManyRequests, "rate_limited", wait)
			return
		}
		s.accept(channel, p, "webhook")
		plain(w, http.StatusOK, "ok", 0)
	}
}

func plain(w http.ResponseWriter, status int, body string, retryAfter int) {
	w.Header().Set("Content-Type", "text/plain")
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(max(retryAfter, 1)))
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p, body, bad := read(r)
	answer := func(v map[string]any) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(v)
	}
	if !s.tokens[token] {
		answer(map[string]any{"ok": false, "error": map[bool]string{true: "not_authed", false: "invalid_auth"}[token == ""]})
		return
	}
	if f := s.injected(p.Channel, body); f != nil {
		if f.Status != http.StatusOK {
			plain(w, f.Status, f.Error, f.RetryAfter)
			return
		}
		answer(map[string]any{"ok": false, "error": f.Error})
		return
	}
	c := s.channels[p.Channel]
	switch {
	case bad == "invalid_payload":
		answer(map[string]any{"ok": false, "error": "invalid_arguments"})
	case c == nil:
		answer(map[string]any{"ok": false, "error": "channel_not_found"})
	case bad != "":
		answer(map[string]any{"ok": false, "error": bad})
	case c.archived:
		answer(map[string]any{"ok": false, "error": "is_archived"})
	default:
		if ok, wait := s.allow(c); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(max(wait, 1)))
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		ts := s.accept(p.Channel, p, "chat.postMessage")
		answer(map[string]any{"ok": true, "channel": p.Channel, "ts": ts, "message": map[string]any{"text": p.Text, "ts": ts}})
	}
}
