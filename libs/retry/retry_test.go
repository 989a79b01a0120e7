package retry

import (
	"net/http"
	"testing"
	"time"
)

func TestAfterReadsSecondsAndDatesWithinTheCallersLimit(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v     string
		limit time.Duration
		want  time.Duration
	}{
		{"", 0, 0}, {"7", 0, 7 * time.Second}, {" 7 ", time.Minute, 7 * time.Second}, {"120", time.Minute, time.Minute},
		{"-1", 0, 0}, {"soon", 0, 0}, {now.Add(90 * time.Second).Format(http.TimeFormat), 0, 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, 0}, {"99999999999", 0, 24 * time.Hour},
	} {
		if got := After(tc.v, now, tc.limit); got != tc.want {
			t.Errorf("After(%q, limit %s) = %s, want %s", tc.v, tc.limit, got, tc.want)
		}
	}
}

func TestBackoffGrowsWithJitterUnderItsCap(t *testing.T) {
	for attempt := -1; attempt < 40; attempt++ {
		d := Backoff(attempt, 100*time.Millisecond, 2*time.Second)
		if d <= 0 || d > 2*time.Second {
			t.Fatalf("attempt %d: %s", attempt, d)
		}
	}
}
