// Package fake is what the local vendor APIs share: failures injected on
// command and a per-account limit of requests per minute. A server calls
// these under its own lock.
package fake

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Failure answers the next N matching requests with Status.
type Failure struct {
	// Match selects the requests whose body or URL contains it ("" every one).
	Match string `json:"match,omitempty"`
	// Status is the answer's HTTP status.
	Status int `json:"status"`
	// RetryAfter (seconds) is sent with a 429.
	RetryAfter int `json:"retry_after,omitempty"`
	N          int `json:"n"`
}

// Failures is a queue of injected failures.
type Failures struct{ queue []*Failure }

// Add queues a failure.
func (q *Failures) Add(f Failure) { q.queue = append(q.queue, &f) }

// Clear drops every queued failure.
func (q *Failures) Clear() { q.queue = nil }

// Take returns the first failure matching a request (its URL and body),
// consuming one of its N, or nil.
func (q *Failures) Take(url string, body []byte) *Failure {
	for i, f := range q.queue {
		if f.Match == "" || strings.Contains(string(body), f.Match) || strings.Contains(url, f.Match) {
			if f.N--; f.N <= 0 {
				q.queue = append(q.queue[:i], q.queue[i+1:]...)
			}
			return f
		}
	}
	return nil
}

// MinuteLimit counts an account's requests per calendar minute, as the
// helpdesks do.
type MinuteLimit struct {
	window time.Time
	used   int
}

// Take counts a request at now against perMinute: the requests left, and
// when none is (ok false) the seconds until the window resets.
func (m *MinuteLimit) Take(now time.Time, perMinute int) (remaining, resetSeconds int, ok bool) {
	if now.Sub(m.window) >= time.Minute {
		m.window, m.used = now.Truncate(time.Minute), 0
	}
	resetSeconds = int(m.window.Add(time.Minute).Sub(now).Seconds()) + 1
	if m.used >= perMinute {
		return 0, resetSeconds, false
	}
	m.used++
	return perMinute - m.used, resetSeconds, true
}

// Latency delays a fake's answers on command (a slow vendor). It is read
// without the server's lock, so concurrent requests wait side by side.
type Latency struct{ d atomic.Int64 }

// Set sets the delay.
func (l *Latency) Set(d time.Duration) { l.d.Store(int64(d)) }

// Wait waits the delay, or until ctx ends.
func (l *Latency) Wait(ctx context.Context) {
	d := time.Duration(l.d.Load())
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// SecondLimit allows at most PerSecond requests in any one second (a
// sliding window, as the survey APIs' per-second limits are) and records
// the most it ever let through in one second, so a test can check a
// client never exceeded the limit.
type SecondLimit struct {
	// Span is the window (default one second; HubSpot's is ten).
	Span    time.Duration
	times   []time.Time // of the requests let through in the last span
	maxSeen int
	refused int
}

// Take counts a request at now against perSecond requests per span (0:
// unlimited): ok, or how long until a request would be allowed.
func (s *SecondLimit) Take(now time.Time, perSecond int) (ok bool, retryAfter time.Duration) {
	span := s.Span
	if span <= 0 {
		span = time.Second
	}
	cut := 0
	for cut < len(s.times) && now.Sub(s.times[cut]) >= span {
		cut++
	}
	s.times = s.times[cut:]
	if perSecond > 0 && len(s.times) >= perSecond {
		s.refused++
		return false, s.times[0].Add(span).Sub(now)
	}
	s.times = append(s.times, now)
	s.maxSeen = max(s.maxSeen, len(s.times))
	return true, 0
}

// Stats are the most requests let through in one span, and how many
// were refused.
func (s *SecondLimit) Stats() (maxPerSecond, refused int) { return s.maxSeen, s.refused }

// Gate is what a survey API's fake checks before answering a request: its
// per-second limit (429 with Retry-After in seconds) and the failures
// queued on command; it counts the requests. Call it under the server's
// lock.
type Gate struct {
	Limit    SecondLimit
	Failures Failures
	requests int
}

// Traffic is what a Gate saw.
type Traffic struct {
	Requests     int `json:"requests"`
	MaxPerSecond int `json:"max_per_second"`
	RateLimited  int `json:"rate_limited"`
}

// Traffic returns the counts.
func (g *Gate) Traffic() Traffic {
	mx, refused := g.Limit.Stats()
	return Traffic{Requests: g.requests, MaxPerSecond: mx, RateLimited: refused}
}

// Admit counts r; when the limit refuses it or a queued failure matches,
// it sets Retry-After, calls answer with the status (the vendor's error
// body) and returns false.
func (g *Gate) Admit(w http.ResponseWriter, r *http.Request, now time.Time, perSecond int, answer func(status int)) bool {
	g.requests++
	if ok, wait := g.Limit.Take(now, perSecond); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		answer(http.StatusTooManyRequests)
		return false
	}
	if fl := g.Failures.Take(r.URL.String(), nil); fl != nil {
		if fl.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(fl.RetryAfter))
		}
		answer(fl.Status)
		return false
	}
	return true
}
