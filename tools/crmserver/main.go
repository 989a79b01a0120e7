// Command crmserver is a local stand-in for a CRM's REST API, for `make
// run` and the tests: accounts keyed by email domain and contacts keyed by
// email, with the behaviour of a real SaaS API under load — latency,
// failures, a rate limit answered 429 with Retry-After, an API key — all
// injectable at start and changeable at run time.
//
//	crmserver -addr 127.0.0.1:8090 -latency 20ms -rate-limit 100
//	curl localhost:8090/v1/accounts/example.com
//	curl -X POST localhost:8090/_control -d '{"down": true}'   # 503 until {"down": false}
//	curl localhost:8090/_stats                                  # requests served, by kind
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// Account is a CRM account, keyed by its email domain.
type Account struct {
	ID     string  `json:"id"`
	Name   string  `json:"name"`
	Domain string  `json:"domain"`
	Tier   string  `json:"tier"`
	ARR    float64 `json:"arr"`
	Owner  struct {
		Name  string `json:"name"`
		Email string `json:"email"`
	} `json:"owner"`
	Region string `json:"region"`
}

// Contact is a CRM contact, keyed by email.
type Contact struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	Name      string `json:"name"`
	Title     string `json:"title"`
	AccountID string `json:"account_id"`
	Lifecycle string `json:"lifecycle"`
}

// Data is what the server knows.
type Data struct {
	Accounts []Account `json:"accounts"`
	Contacts []Contact `json:"contacts"`
}

// seed covers the domains and people of the dev generator (tools/internal/delightedgen);
// example.jp is deliberately unknown (a negative answer to cache).
func seed() Data {
	acct := func(id, name, domain, tier string, arr float64, owner, ownerEmail, region string) Account {
		a := Account{ID: id, Name: name, Domain: domain, Tier: tier, ARR: arr, Region: region}
		a.Owner.Name, a.Owner.Email = owner, ownerEmail
		return a
	}
	return Data{
		Accounts: []Account{
			acct("acc_001", "Example GmbH", "example.de", "enterprise", 480000, "Maren Vogel", "maren.vogel@closedloop.example", "eu-central"),
			acct("acc_002", "Example Inc.", "example.com", "enterprise", 1250000, "Dana Brooks", "dana.brooks@closedloop.example", "us-east"),
			acct("acc_003", "Example Österreich", "example.at", "mid-market", 86000, "Maren Vogel", "maren.vogel@closedloop.example", "eu-central"),
			acct("acc_004", "Example France SAS", "example.fr", "growth", 42000, "Luc Bernard", "luc.bernard@closedloop.example", "eu-west"),
			acct("acc_005", "Example India Pvt", "example.in", "starter", 9000, "Asha Rao", "asha.rao@closedloop.example", "ap-south"),
			acct("acc_006", "Example España", "example.es", "growth", 38000, "Luc Bernard", "luc.bernard@closedloop.example", "eu-west"),
		},
		Contacts: []Contact{
			{ID: "con_101", Email: "anna.mueller@example.de", Name: "Anna Müller", Title: "Head of Operations", AccountID: "acc_001", Lifecycle: "customer"},
			{ID: "con_102", Email: "sam.okafor@example.com", Name: "Sam Okafor", Title: "VP Engineering", AccountID: "acc_002", Lifecycle: "customer"},
			{ID: "con_103", Email: "lena.gross@example.at", Name: "Lena Groß", Title: "IT Manager", AccountID: "acc_003", Lifecycle: "customer"},
		},
	}
}

type control struct {
	Down     bool    `json:"down"`
	Latency  string  `json:"latency"`
	FailRate float64 `json:"fail_rate"`
}

type server struct {
	accounts map[string]Account
	contacts map[string]Contact
	apiKey   string
	limiter  *rate.Limiter
	mu       sync.RWMutex
	ctl      control
	latency  time.Duration
	requests sync.Map // kind -> *atomic.Int64
}

func (s *server) count(kind string) {
	v, _ := s.requests.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/healthz" || r.URL.Path == "/readyz":
		_, _ = w.Write([]byte("ok\n"))
		return
	case r.URL.Path == "/_control" && r.Method == http.MethodPost:
		var c control
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d, err := time.ParseDuration(orDefault(c.Latency, "0s"))
		if err != nil {
			http.Error(w, "latency: "+err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.ctl, s.latency = c, d
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, c)
		return
	case r.URL.Path == "/_stats":
		out := map[string]int64{}
		s.requests.Range(func(k, v any) bool { out[k.(string)] = v.(*atomic.Int64).Load(); return true })
		writeJSON(w, http.StatusOK, out)
		return
	}
	s.count("total")
	if s.apiKey != "" && r.Header.Get("Authorization") != "Bearer "+s.apiKey {
		s.count("401")
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong API key"})
		return
	}
	if s.limiter != nil && !s.limiter.Allow() {
		s.count("429")
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "rate limit exceeded"})
		return
	}
	s.mu.RLock()
	ctl, latency := s.ctl, s.latency
	s.mu.RUnlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	if ctl.Down || (ctl.FailRate > 0 && rand.Float64() < ctl.FailRate) {
		s.count("503")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily unavailable"})
		return
	}
	kind, key, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
	key = strings.ToLower(key)
	switch {
	case ok && kind == "accounts":
		s.count("accounts")
		if a, found := s.accounts[key]; found {
			writeJSON(w, http.StatusOK, map[string]any{"account": a})
			return
		}
	case ok && kind == "contacts":
		s.count("contacts")
		if c, found := s.contacts[key]; found {
			body := map[string]any{"contact": c}
			for _, a := range s.accounts {
				if a.ID == c.AccountID {
					body["account"] = a
				}
			}
			writeJSON(w, http.StatusOK, body)
			return
		}
	default:
		http.NotFound(w, r)
		return
	}
	s.count("404")
	writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	latency := flag.Duration("latency", 0, "added to every answer")
	failRate := flag.Float64("fail-rate", 0, "fraction of requests answered 503")
	rateLimit := flag.Float64("rate-limit", 0, "requests per second before 429 + Retry-After (0: none)")
	dataFile := flag.String("data", "", "JSON file with {accounts, contacts} (default: the built-in seed)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	data := seed()
	if *dataFile != "" {
		b, err := os.ReadFile(*dataFile)
		if err == nil {
			data = Data{}
			err = json.Unmarshal(b, &data)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "crmserver: -data:", err)
			os.Exit(2)
		}
	}
	s := &server{accounts: map[string]Account{}, contacts: map[string]Contact{}, apiKey: os.Getenv("CRM_API_KEY"),
		ctl: control{FailRate: *failRate}, latency: *latency}
	for _, a := range data.Accounts {
		s.accounts[strings.ToLower(a.Domain)] = a
	}
	for _, c := range data.Contacts {
		s.contacts[strings.ToLower(c.Email)] = c
	}
	if *rateLimit > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(*rateLimit), max(1, int(*rateLimit)))
	}
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("crm server listening", "addr", *addr, "accounts", len(s.accounts), "contacts", len(s.contacts),
		"latency", latency.String(), "fail_rate", *failRate, "rate_limit", *rateLimit, "api_key", s.apiKey != "")
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "crmserver:", err)
		os.Exit(1)
	}
}
