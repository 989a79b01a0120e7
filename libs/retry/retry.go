// Package retry is how closedloop waits before trying again: exponential
// backoff with full jitter, the destination's own Retry-After, and the
// circuit breaker a failing dependency opens. The stages' consumers, the
// enricher's lookups and every sink and destination use it.
package retry

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Backoff is the wait before retry number attempt (from 1): exponential
// from base, capped at max, drawn uniformly from (0, that] (full jitter).
func Backoff(attempt int, base, max time.Duration) time.Duration {
	d := base << min(max0(attempt-1), 20)
	if d > max || d <= 0 {
		d = max
	}
	return time.Duration(rand.Int64N(int64(d))) + 1
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}

// After is the wait an HTTP Retry-After value asks for: delay-seconds or an
// HTTP date (RFC 9110 §10.2.3), at most limit (0: no limit); 0 when absent,
// malformed or already past. Every caller states its own limit, since what
// a caller may wait differs (a lookup holding a batch waits less than a
// sink whose Kafka holds the backlog).
func After(value string, now time.Time, limit time.Duration) time.Duration {
	value = strings.TrimSpace(value)
	var d time.Duration
	if s, err := strconv.ParseInt(value, 10, 64); err == nil && s >= 0 {
		d = time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	} else if t, err := http.ParseTime(value); err == nil && t.After(now) {
		d = t.Sub(now)
	}
	if limit > 0 && d > limit {
		d = limit
	}
	return d
}

// Sleep waits d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
