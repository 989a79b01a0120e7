package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	freshdeskfake "github.com/closedloop/closedloop/tools/fakes/freshdesk"
	zendeskfake "github.com/closedloop/closedloop/tools/fakes/zendesk"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
)

// TestTheLoopClosesFromDetractorToSolvedTicket runs the whole pipeline
// with both helpdesks: detractors' webhooks become Zendesk and Freshdesk
// tickets, the helpdesks' agents reply and solve them, their ticket
// webhooks (Zendesk's signed, Freshdesk's automation ones) come back
// through the ingress as follow-ups, the warehouse's loop_closure view
// follows every detractor to its solved tickets, and `closedloopctl status`
// reports the share and the median time to close the loop.
func TestTheLoopClosesFromDetractorToSolvedTicket(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	const hookSecret = "e2e-zendesk-webhook-secret"
	zd := zendeskfake.New()
	zd.PerMinute = 1 << 30
	zd.AddAPIToken("agent@example.com", "zd-e2e-loop-token-0123")
	zdSrv := httptest.NewServer(zd)
	t.Cleanup(zdSrv.Close)
	fd := freshdeskfake.New()
	fd.PerMinute = 1 << 30
	fd.AddAPIKey("fd-e2e-loop-key-0123")
	fdSrv := httptest.NewServer(fd)
	t.Cleanup(fdSrv.Close)

	p := pipelineSpec("e2e_loop", infra.broker.Addrs, infra.redis.Addr, "E2E_ZD_TOKEN=zd-e2e-loop-token-0123",
		"E2E_FD_KEY=fd-e2e-loop-key-0123", "E2E_ZD_HOOK_SECRET="+hookSecret)
	p.Run = []string{"sink-warehouse", "sink-webhook", "enricher", "normalizer", "ingress", "admin"}
	p.AdminTokens = map[string]string{"ann": "viewer"}
	p.SourcesYAML = "  - name: zendesk-tickets\n    provider: zendesk\n    secrets: [env:E2E_ZD_HOOK_SECRET]\n    ingest_tokens: [env:CLOSEDLOOP_DEV_INGEST_TOKEN]\n" +
		"  - name: freshdesk-tickets\n    provider: freshdesk\n    ingest_tokens: [env:CLOSEDLOOP_DEV_INGEST_TOKEN]\n"
	p.SinksYAML = "  zendesk:\n    accounts:\n      - name: support\n        url: " + zdSrv.URL + "\n        email: agent@example.com\n" +
		"        api_token: env:E2E_ZD_TOKEN\n        requests_per_minute: 1000000\n" +
		"  freshdesk:\n    accounts:\n      - name: desk\n        url: " + fdSrv.URL + "\n        api_key: env:E2E_FD_KEY\n        requests_per_minute: 1000000\n"
	startPipeline(t, p)
	base := strings.TrimSuffix(p.IngressURL, "/delighted/"+p.Token)
	zdHooks := zd.WebhooksTo(base+"/zendesk-tickets/"+p.Token, hookSecret)
	fdHooks := fd.WebhooksTo(base + "/freshdesk-tickets/" + p.Token)
	zd.Agent = zd.NewAgent(1, 500*time.Millisecond, 1500*time.Millisecond)
	fd.Agent = fd.NewAgent(1, 500*time.Millisecond, 1500*time.Millisecond)

	gen := delightedgen.New([]byte(p.Secret), 11)
	client := &http.Client{Timeout: 5 * time.Second}
	detractors := map[string]bool{}
	for i := 0; i < 24; i++ {
		created, _ := gen.Response()
		var body struct {
			EventData struct {
				Score int `json:"score"`
			} `json:"event_data"`
		}
		_ = json.Unmarshal(created.Body, &body)
		if body.EventData.Score <= 6 {
			detractors[created.Subject] = true
		}
		if code, err := delightedgen.Send(context.Background(), client, p.IngressURL, created); err != nil || code != http.StatusAccepted && code != http.StatusOK {
			t.Fatalf("send %s: %d %v", created.Subject, code, err)
		}
	}
	if len(detractors) < 3 {
		t.Fatalf("only %d detractors generated; pick another seed", len(detractors))
	}

	pool := db(t)
	ctx := context.Background()
	deadline := time.Now().Add(90 * time.Second)
	var solved map[string]int
	for time.Now().Before(deadline) {
		solved = map[string]int{}
		rows, err := pool.Query(ctx, `SELECT ticket_system, count(*) FROM cl_e2e_loop.loop_closure WHERE solved_at IS NOT NULL AND first_reply_at IS NOT NULL GROUP BY 1`)
		if err == nil {
			for rows.Next() {
				var sys string
				var n int
				_ = rows.Scan(&sys, &n)
				solved[sys] = n
			}
			rows.Close()
		}
		if solved["zendesk"] == len(detractors) && solved["freshdesk"] == len(detractors) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if solved["zendesk"] != len(detractors) || solved["freshdesk"] != len(detractors) {
		zdDone, zdFailed := zdHooks.Counts()
		fdDone, fdFailed := fdHooks.Counts()
		t.Fatalf("solved tickets in loop_closure %v, want %d per helpdesk (%d zendesk, %d freshdesk tickets; webhooks zendesk %d/%d failed, freshdesk %d/%d failed)",
			solved, len(detractors), len(zd.Tickets()), len(fd.Tickets()), zdDone, zdFailed, fdDone, fdFailed)
	}
	// Every detractor, and only they, has one row per helpdesk, each with
	// its durations in order.
	rows, err := pool.Query(ctx, `SELECT response_id, ticket_system, time_to_ticket, time_to_first_reply, time_to_solved FROM cl_e2e_loop.loop_closure`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var id, sys string
		var toTicket, toReply, toSolved time.Duration
		if err := rows.Scan(&id, &sys, &toTicket, &toReply, &toSolved); err != nil {
			t.Fatal(err)
		}
		n++
		if !detractors[id] || toTicket < 0 || toReply < toTicket || toSolved < toReply {
			t.Errorf("loop_closure row %s %s: to ticket %v, reply %v, solved %v", id, sys, toTicket, toReply, toSolved)
		}
	}
	rows.Close()
	if n != 2*len(detractors) {
		t.Fatalf("loop_closure has %d rows, want %d (a row per detractor and helpdesk)", n, 2*len(detractors))
	}

	// The status reports it (the warehouse recomputes at most every 15 s).
	var st struct {
		LoopClosure struct {
			Detractors            string  `json:"detractors"`
			Ticketed              string  `json:"ticketed"`
			Solved                string  `json:"solved"`
			MedianToSolvedSeconds float64 `json:"median_to_solved_seconds"`
			Systems               []struct {
				System string `json:"system"`
			} `json:"systems"`
		} `json:"loop_closure"`
	}
	want := strconv.Itoa(len(detractors))
	for time.Now().Before(deadline.Add(20 * time.Second)) {
		out, _ := ctl(t, p, "ann", "status", "-o", "json")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		if st.LoopClosure.Solved == want {
			break
		}
		time.Sleep(time.Second)
	}
	lc := st.LoopClosure
	if lc.Detractors != want || lc.Ticketed != want || lc.Solved != want || lc.MedianToSolvedSeconds <= 0 || len(lc.Systems) != 2 {
		t.Fatalf("status loop closure %+v, want %s detractors all ticketed and solved by two helpdesks", lc, want)
	}
	out, _ := ctl(t, p, "ann", "status")
	if !strings.Contains(out, "loop closure, last 24h: "+want+" detractors, "+want+" (100%) with a ticket") {
		t.Fatalf("status does not show the loop closure:\n%s", out)
	}
}
