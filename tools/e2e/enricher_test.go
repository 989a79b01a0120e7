package e2e

import (
	"context"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// enrichedRow is what the warehouse holds of an event's enrichment.
type enrichedRow struct {
	segment, lane, labels, status, tier, lookupErr string
	latencyMS                                      float64
}

func enrichedRows(t *testing.T, p *stack.Pipeline, ids []string) map[string]enrichedRow {
	t.Helper()
	rows, err := db(t).Query(context.Background(), `SELECT event_id, coalesce(segment, ''), coalesce(lane, ''), array_to_string(labels, ','),
		coalesce(event->'enrichment'->'lookups'->'account'->>'status', ''),
		coalesce(event->'enrichment'->'lookups'->'account'->'fields'->>'tier', ''),
		coalesce(event->'enrichment'->'lookups'->'account'->>'error', ''),
		extract(epoch FROM _cl_batched_at - _cl_received_at) * 1000
		FROM `+p.Schema()+`.feedback_events WHERE event_id = ANY($1)`, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]enrichedRow{}
	for rows.Next() {
		var id string
		var r enrichedRow
		if err := rows.Scan(&id, &r.segment, &r.lane, &r.labels, &r.status, &r.tier, &r.lookupErr, &r.latencyMS); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	return out
}

func crmControl(t *testing.T, url, body string) {
	t.Helper()
	resp, err := http.Post(url+"/_control", "application/json", strings.NewReader(body))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("crm control %s: %v %v", body, resp, err)
	}
	resp.Body.Close()
}

// TestTheEnricherRoutesByAccountFailsOpenAndSurvivesAKill runs the whole
// pipeline with the local CRM server behind the enricher's account lookup:
// while the CRM is down every event still reaches the warehouse, marked not
// enriched with the reason and within a bounded delay, detractors still on
// the priority lane; once it is back, events carry the account's fields
// and enterprise detractors are labelled "escalate"; a SIGKILL of the
// enricher mid-stream loses no event.
func TestTheEnricherRoutesByAccountFailsOpenAndSurvivesAKill(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	crm, crmURL, err := stack.StartCRM(context.Background(), infra.binDir, infra.dir, "-latency", "5ms")
	if err != nil {
		t.Fatal(err)
	}
	defer crm.Stop()
	crmControl(t, crmURL, `{"down": true}`)
	p := pipelineSpec("e2e_enrich", infra.broker.Addrs, infra.redis.Addr, "CONSUMER_SESSION_TIMEOUT=6s")
	p.CRMURL = crmURL
	p.Dir = filepath.Join(infra.dir, "e2e_enrich")
	startPipeline(t, p)
	gen := delightedgen.New([]byte(p.Secret), 11)
	sendAll := func(n int) []string {
		var ids []string
		for range n {
			c, u := gen.Response()
			for _, w := range []delightedgen.Webhook{c, u} {
				send(t, p, w, http.StatusAccepted)
				ids = append(ids, w.EventID)
			}
		}
		return ids
	}
	wait := func(ids []string) map[string]enrichedRow {
		t.Helper()
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		waitRows(t, db(t), p.Schema(), want, 60*time.Second)
		return enrichedRows(t, p, ids)
	}

	// 1. The CRM is down: every event arrives, not enriched, with the reason.
	down := wait(sendAll(10))
	worst := 0.0
	for id, r := range down {
		if r.status != "LOOKUP_STATUS_FAILED" || r.lookupErr == "" {
			t.Errorf("CRM down: %s has lookup %s %q, want failed with a reason", id, r.status, r.lookupErr)
		}
		if want := map[bool]string{true: "priority", false: "standard"}[r.segment == "detractor"]; r.lane != want {
			t.Errorf("CRM down: %s (%s) on lane %q, want %s by the default rule", id, r.segment, r.lane, want)
		}
		worst = max(worst, r.latencyMS)
	}
	t.Logf("CRM down: %d events delivered not enriched; worst webhook→row %.0f ms (lookup max_delay 3s); e.g. %q", len(down), worst, anyErr(down))

	// 2. The CRM is back: after the breaker's 5 s, a probe closes it.
	crmControl(t, crmURL, `{"down": false, "latency": "5ms"}`)
	time.Sleep(5500 * time.Millisecond)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := wait(sendAll(1))
		ok := true
		for _, row := range r {
			ok = ok && row.status != "LOOKUP_STATUS_FAILED"
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lookup never recovered after the CRM came back: %v", r)
		}
		time.Sleep(time.Second)
	}
	up := wait(sendAll(30))
	escalated := 0
	for id, r := range up {
		switch r.status {
		case "LOOKUP_STATUS_FOUND":
			if r.tier == "" {
				t.Errorf("%s found without its tier", id)
			}
		case "LOOKUP_STATUS_NOT_FOUND": // example.jp is not in the CRM
		default:
			t.Errorf("CRM up: %s has lookup %s %q", id, r.status, r.lookupErr)
		}
		wantLabel := r.segment == "detractor" && r.tier == "enterprise"
		if strings.Contains(r.labels, "escalate") != wantLabel {
			t.Errorf("%s (%s, %s) labels %q", id, r.segment, r.tier, r.labels)
		}
		if wantLabel {
			escalated++
		}
		if (r.segment == "detractor") != (r.lane == "priority") {
			t.Errorf("%s (%s) on lane %q", id, r.segment, r.lane)
		}
	}
	t.Logf("CRM up: %d events enriched, %d enterprise detractors escalated on the priority lane", len(up), escalated)

	// 3. SIGKILL the enricher in the middle of a stream: nothing is lost.
	stream := make(chan []string, 1)
	go func() { stream <- sendAll(150) }()
	waitConsuming(t, p, "enricher", 60*time.Second)
	time.Sleep(time.Duration(300+rand.IntN(500)) * time.Millisecond)
	p.Services["enricher"].Kill()
	if err := p.Restart(context.Background(), "enricher"); err != nil {
		t.Fatal(err)
	}
	ids := <-stream
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	rows := waitRows(t, db(t), p.Schema(), want, 90*time.Second)
	for _, id := range ids {
		if rows[id] != 1 {
			t.Errorf("after the kill: event %s has %d rows", id, rows[id])
		}
	}
	t.Logf("enricher killed mid-stream and restarted: all %d events in the warehouse once each", len(ids))
}

func anyErr(rows map[string]enrichedRow) string {
	for _, r := range rows {
		return r.lookupErr
	}
	return ""
}
