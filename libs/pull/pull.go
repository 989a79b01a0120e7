// Package pull reads a provider's history through its REST API — the
// complement of its webhooks — for backfills and reconciliation. Each item
// becomes the same raw record body a webhook of that provider would carry
// (a Delighted event envelope, a Typeform form_response), so the normalizer
// maps it with the provider's own mapping and the dedupe keys of a webhook
// and of its fetched copy coincide.
//
// A Lister pages through a window of time with a cursor that can be
// persisted and resumed; every request waits for the client's Limiter (the
// provider's rate limit, never exceeded: the first request of a process
// counts the last second as full, so a restart cannot burst) and a 429 pauses the
// client until the provider's Retry-After has passed.
package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/idempotency"
	"github.com/closedloop/closedloop/libs/retry"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Item is one record of a provider's history, as a webhook body.
type Item struct {
	// EventID is deterministic (the same version of the same item always
	// gets the same id): "api:<kind>:<id>:<version>".
	EventID   string
	EventType string
	Body      []byte
	// Subject names the item ("response 123") in logs and dry runs.
	Subject string
	// At is the item's time in the window (created, submitted or updated).
	At time.Time
	// Subject and Version are the subject version the normalizer will
	// map the item to (DedupeKeys): how reconciliation asks whether the
	// pipeline has seen it.
	SubjectType feedbackv1.SubjectType
	SubjectID   string
	Version     time.Time
}

// DedupeKeys are the ids the normalizer will dedupe the item by.
func (it Item) DedupeKeys() []string {
	ev := &feedbackv1.FeedbackEvent{EventId: it.EventID, Subject: &feedbackv1.Subject{Type: it.SubjectType, Id: it.SubjectID}}
	if !it.Version.IsZero() {
		ev.Version = timestamppb.New(it.Version)
	}
	return idempotency.EventKeys(ev)
}

// Window is the time range to list, both ends inclusive (the providers'
// since/until are). ByUpdate lists by last update rather than creation
// where the API can (Delighted's updated_since), for reconciliation: a
// response updated in the window is listed though created before.
type Window struct {
	Since, Until time.Time
	ByUpdate     bool
}

// Page is one answer: its items and the cursor of the next page ("" when
// the window is done).
type Page struct {
	Items []Item
	Next  string
}

// Lister lists a provider's history.
type Lister interface {
	// List returns the page at cursor ("" for the first).
	List(ctx context.Context, w Window, cursor string) (Page, error)
}

// Errors a Lister returns, typed by kind (libs/fault): an error the same
// request may outlive (RateLimited, Unavailable) is retried by the caller;
// Unauthenticated, Denied and Invalid are not.
var (
	ErrUnauthorized = fault.Errorf(fault.Unauthenticated, "the provider refused the API key")
)

// Limiter lets at most perSecond requests start in any window of one
// second plus a margin for the network's jitter (a request that left late
// must not arrive in the same second as the ones after it), and holds every
// request while the provider asked to wait (429 Retry-After). A new
// Limiter counts the window as full from its creation: a process restarted
// right after a burst cannot add a second one. Safe for concurrent use.
type Limiter struct {
	window time.Duration
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration) error

	mu    sync.Mutex
	sent  []time.Time // start times of the last perSecond requests, a ring
	head  int
	pause time.Time // the provider's Retry-After
	n     int64
}

// Margin is added to the one-second window: a provider counts a request
// when it arrives, which can be later than it was sent by the network's and
// both schedulers' delays. 25 ms was not enough on a loaded 2-core machine
// (a 429 from the local Delighted fake in CI, one request of 20 arriving
// late); 100 ms costs a limited pull ~9 % of its rate.
const Margin = 100 * time.Millisecond

// NewLimiter allows perSecond requests a second (0 or less: unlimited).
func NewLimiter(perSecond int) *Limiter {
	l := &Limiter{now: time.Now, sleep: retry.Sleep, window: time.Second + Margin}
	if perSecond > 0 {
		l.sent = make([]time.Time, perSecond)
		now := l.now()
		for i := range l.sent {
			l.sent[i] = now
		}
	}
	return l
}

// Wait blocks until a request may be sent and reserves its slot.
func (l *Limiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	now := l.now()
	at := now
	if len(l.sent) > 0 {
		if free := l.sent[l.head].Add(l.window); free.After(at) {
			at = free
		}
	}
	if l.pause.After(at) {
		at = l.pause
	}
	if len(l.sent) > 0 {
		l.sent[l.head] = at
		l.head = (l.head + 1) % len(l.sent)
	}
	l.n++
	l.mu.Unlock()
	return l.sleep(ctx, at.Sub(now))
}

// PauseUntil holds every request until t (a 429's Retry-After).
func (l *Limiter) PauseUntil(t time.Time) {
	l.mu.Lock()
	if t.After(l.pause) {
		l.pause = t
	}
	l.mu.Unlock()
}

// Requests is how many requests were let through.
func (l *Limiter) Requests() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// client is the HTTP part both providers share.
type client struct {
	base    string
	http    *http.Client
	limiter *Limiter
	auth    func(*http.Request)
	// maxWait bounds one Retry-After (a provider asking for an hour is
	// told no: the request fails as rate limited and the job retries).
	maxWait time.Duration
}

// get sends one GET (after the limiter), retrying a 429 after its
// Retry-After and a 5xx or network error with backoff, up to attempts.
func (c *client) get(ctx context.Context, path string, attempts int) ([]byte, error) {
	var last error
	for attempt := 1; attempt <= attempts; attempt++ {
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
		if err != nil {
			return nil, fault.Wrap(fault.Invalid, err)
		}
		req.Header.Set("Accept", "application/json")
		c.auth(req)
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			last = fault.Wrap(fault.Unavailable, err)
			_ = retry.Sleep(ctx, retry.Backoff(attempt, 200*time.Millisecond, 10*time.Second))
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		_ = resp.Body.Close()
		switch {
		case err != nil:
			last = fault.Wrap(fault.Unavailable, err)
		case resp.StatusCode == http.StatusOK:
			return body, nil
		case resp.StatusCode == http.StatusTooManyRequests:
			wait := retry.After(resp.Header.Get("Retry-After"), time.Now(), c.maxWait)
			if wait <= 0 {
				wait = retry.Backoff(attempt, time.Second, c.maxWait)
			}
			c.limiter.PauseUntil(time.Now().Add(wait))
			last = fault.Errorf(fault.RateLimited, "GET %s: 429 Too Many Requests (waiting %s)", path, wait)
			continue // the limiter holds the next request until then
		case resp.StatusCode == http.StatusUnauthorized:
			return nil, fmt.Errorf("GET %s: %w", path, ErrUnauthorized)
		case resp.StatusCode == http.StatusForbidden:
			return nil, fault.Errorf(fault.Denied, "GET %s: 403 (the plan or the token's scopes do not allow it): %s", path, snippet(body))
		case resp.StatusCode == http.StatusNotFound:
			return nil, fault.Errorf(fault.NotFound, "GET %s: 404: %s", path, snippet(body))
		case resp.StatusCode >= 500:
			last = fault.Errorf(fault.Unavailable, "GET %s: %d: %s", path, resp.StatusCode, snippet(body))
		default:
			return nil, fault.Errorf(fault.Invalid, "GET %s: %d: %s", path, resp.StatusCode, snippet(body))
		}
		_ = retry.Sleep(ctx, retry.Backoff(attempt, 200*time.Millisecond, 10*time.Second))
	}
	return nil, last
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// Retryable reports whether a List error may go away by itself.
func Retryable(err error) bool {
	return fault.Is(err, fault.RateLimited) || fault.Is(err, fault.Unavailable) || errors.Is(err, context.DeadlineExceeded)
}
