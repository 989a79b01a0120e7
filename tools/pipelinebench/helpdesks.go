package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sort"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	freshdeskfake "github.com/closedloop/closedloop/tools/fakes/freshdesk"
	zendeskfake "github.com/closedloop/closedloop/tools/fakes/zendesk"
)

// helpdesks are the local Zendesk and Freshdesk the bench's detractors
// become tickets in.
type helpdesks struct {
	zd       *zendeskfake.Server
	fd       *freshdeskfake.Server
	zdSrv    *httptest.Server
	fdSrv    *httptest.Server
	yaml     string
	env      []string
	phase1   map[string]int
	detracts int
}

func startHelpdesks() *helpdesks {
	h := &helpdesks{zd: zendeskfake.New(), fd: freshdeskfake.New(), phase1: map[string]int{}}
	h.zd.PerMinute, h.fd.PerMinute = 1<<30, 1<<30
	h.zd.AddAPIToken("agent@example.com", "bench-zendesk-token")
	h.fd.AddAPIKey("bench-freshdesk-key")
	h.zdSrv, h.fdSrv = httptest.NewServer(h.zd), httptest.NewServer(h.fd)
	h.yaml = "  zendesk:\n    accounts:\n      - name: support\n        url: " + h.zdSrv.URL + "\n        email: agent@example.com\n" +
		"        api_token: env:BENCH_ZENDESK_TOKEN\n        requests_per_minute: 100000000\n" +
		"  freshdesk:\n    accounts:\n      - name: desk\n        url: " + h.fdSrv.URL + "\n        api_key: env:BENCH_FRESHDESK_KEY\n" +
		"        requests_per_minute: 100000000\n"
	h.env = []string{"BENCH_ZENDESK_TOKEN=bench-zendesk-token", "BENCH_FRESHDESK_KEY=bench-freshdesk-key"}
	return h
}

func (h *helpdesks) close() { h.zdSrv.Close(); h.fdSrv.Close() }

func (h *helpdesks) count(name string) int {
	if name == "zendesk" {
		return len(h.zd.Tickets())
	}
	return len(h.fd.Tickets())
}

// created is each ticket's creation time by the response key it holds.
func (h *helpdesks) created(name string) map[string]time.Time {
	out := map[string]time.Time{}
	if name == "zendesk" {
		for _, t := range h.zd.Tickets() {
			out[t.ExternalID] = t.CreatedAt
		}
		return out
	}
	for _, t := range h.fd.Tickets() {
		key, _ := t.CustomFields["cf_closedloop_response"].(string)
		out[key] = t.CreatedAt
	}
	return out
}

// wait waits for a ticket per detractor in the warehouse in each helpdesk
// and returns when each had its last.
func (h *helpdesks) wait(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) (map[string]time.Time, error) {
	start := time.Now()
	var want int
	if err := pool.QueryRow(ctx, `SELECT count(DISTINCT subject_id) FROM closedloop.feedback_events WHERE segment = 'detractor'`).Scan(&want); err != nil {
		return nil, err
	}
	h.detracts = want
	done := map[string]time.Time{}
	for len(done) < 2 {
		for _, name := range []string{"zendesk", "freshdesk"} {
			if _, ok := done[name]; !ok && h.count(name) >= want {
				done[name] = time.Now()
			}
		}
		if time.Since(start) > timeout {
			return nil, fmt.Errorf("after %s: %d zendesk and %d freshdesk tickets, want %d each", timeout, h.count("zendesk"), h.count("freshdesk"), want)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return done, nil
}

// report waits for the latency phase's tickets and prints webhook→ticket
// per helpdesk.
func (h *helpdesks) report(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) error {
	if _, err := h.wait(ctx, pool, timeout); err != nil {
		return err
	}
	received := map[string]time.Time{}
	rows, err := pool.Query(ctx, `SELECT source || '/response/' || subject_id, min(_cl_received_at) FROM closedloop.feedback_events
		WHERE segment = 'detractor' GROUP BY 1`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var key string
		var at time.Time
		if err := rows.Scan(&key, &at); err != nil {
			return err
		}
		received[key] = at
	}
	rows.Close()
	for _, name := range []string{"zendesk", "freshdesk"} {
		created := h.created(name)
		h.phase1[name] = len(created)
		var lat []float64
		for key, at := range created {
			if r, ok := received[key]; ok {
				lat = append(lat, float64(at.Sub(r).Microseconds())/1000)
			}
		}
		if len(lat) == 0 {
			return fmt.Errorf("no %s ticket matches a detractor", name)
		}
		sort.Float64s(lat)
		q := func(f float64) float64 { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
		fmt.Printf("%-10s webhook→ticket   over %d tickets:     p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%d tickets for %d detractors)\n",
			name, len(lat), q(0.5), q(0.9), q(0.99), lat[len(lat)-1], len(created), h.detracts)
	}
	return nil
}
