package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	hubspotfake "github.com/closedloop/closedloop/tools/fakes/hubspot"
)

// crmDest is the local HubSpot the bench's responses update contacts in
// (each response its own person): the batch-upserting destination. Tasks
// are off: each costs an association call, which would measure HubSpot's
// per-task API rather than the batch path.
type crmDest struct {
	hs   *hubspotfake.Server
	srv  *httptest.Server
	yaml string
	env  []string

	mu      sync.Mutex
	samples []sample // the contact count over time, from track
}

type sample struct {
	at time.Time
	n  int
}

// track samples the contact count every 20 ms until ctx ends, so the time
// the CRM finished is known whatever the bench waits for first.
func (c *crmDest) track(ctx context.Context) {
	for {
		n := c.contacts()
		c.mu.Lock()
		c.samples = append(c.samples, sample{time.Now(), n})
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// reached is when the contact count first reached n (zero if never).
func (c *crmDest) reached(n int) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.samples {
		if s.n >= n {
			return s.at
		}
	}
	return time.Time{}
}

func startCRM() *crmDest {
	c := &crmDest{hs: hubspotfake.New()}
	c.hs.PerTenSeconds = 1 << 30
	c.hs.AddToken("bench-hubspot-token")
	c.srv = httptest.NewServer(c.hs)
	c.yaml = "  hubspot:\n    accounts:\n      - name: crm\n        url: " + c.srv.URL + "\n        token: env:BENCH_HUBSPOT_TOKEN\n" +
		"        requests_per_10s: 100000000\n        tasks: {create: none}\n        unsubscribe: {subscription: Marketing Information}\n"
	c.env = []string{"BENCH_HUBSPOT_TOKEN=bench-hubspot-token"}
	return c
}

func (c *crmDest) close() { c.srv.Close() }

// contacts is how many contacts there are: each made by a response.
func (c *crmDest) contacts() int { return c.hs.Stats().Contacts }

// wait waits until every respondent in the warehouse is a contact with
// feedback, and returns when.
func (c *crmDest) wait(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) (int, time.Time, error) {
	var want int
	if err := pool.QueryRow(ctx, `SELECT count(DISTINCT lower(respondent_email)) FROM closedloop.feedback_events WHERE respondent_email <> ''`).Scan(&want); err != nil {
		return 0, time.Time{}, err
	}
	for start := time.Now(); ; {
		if c.contacts() >= want {
			time.Sleep(25 * time.Millisecond) // one more sample
			return want, c.reached(want), nil
		}
		if time.Since(start) > timeout {
			return 0, time.Time{}, fmt.Errorf("after %s: %d HubSpot contacts with feedback, want %d", timeout, c.contacts(), want)
		}
		select {
		case <-ctx.Done():
			return 0, time.Time{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// report prints what the drain cost the CRM: contacts, API calls, contacts
// per call.
func (c *crmDest) report(events int, took time.Duration) {
	st := c.hs.Stats()
	fmt.Printf("hubspot    all %d contacts written %s after the drain's first send: %.0f events/s through batch upserts (%d API requests in all, %.1f contact writes per request; tasks off)\n",
		c.contacts(), took.Round(time.Millisecond), float64(events)/took.Seconds(), st.Requests, float64(st.ContactWrites)/float64(max(1, st.Requests)))
}

// latency prints webhook→contact over the latency phase's events: each
// contact write's time in the fake minus the event's received_at (one
// clock), waiting first for a contact per row.
func (c *crmDest) latency(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) error {
	if _, _, err := c.wait(ctx, pool, timeout); err != nil {
		return err
	}
	received := map[string]time.Time{}
	rows, err := pool.Query(ctx, `SELECT event_id, _cl_received_at FROM closedloop.feedback_events`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			return err
		}
		received[id] = at
	}
	rows.Close()
	var lat []float64
	for _, w := range c.hs.Writes() {
		if r, ok := received[w.Properties["closedloop_event_id"]]; ok {
			lat = append(lat, float64(w.At.Sub(r).Microseconds())/1000)
		}
	}
	if len(lat) == 0 {
		return fmt.Errorf("no HubSpot contact write matches an event")
	}
	sort.Float64s(lat)
	q := func(f float64) float64 { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
	fmt.Printf("%-10s webhook→contact  over %d writes:      p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%d API requests, %.1f contacts per request)\n",
		"hubspot", len(lat), q(0.5), q(0.9), q(0.99), lat[len(lat)-1], c.hs.Stats().Requests, float64(len(lat))/float64(max(1, c.hs.Stats().Requests)))
	return nil
}
