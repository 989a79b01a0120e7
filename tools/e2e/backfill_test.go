package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/closedloop/closedloop/libs/providers"
	delightedfake "github.com/closedloop/closedloop/tools/fakes/delighted"
	typeformfake "github.com/closedloop/closedloop/tools/fakes/typeform"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
)

const delightedAPIKey = "dl-api-key-e2e"

// delightedAPI is the local Delighted API of a test, and the api block of
// the pipeline's delighted source pointing at it.
func delightedAPI(t *testing.T, perSecond int, reconcile string) (*delightedfake.Fake, string) {
	t.Helper()
	f := delightedfake.New(delightedAPIKey)
	f.PerSecond = perSecond
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	yml := "    api:\n      base_url: " + srv.URL + "/v1\n      key: env:E2E_DELIGHTED_API_KEY\n      rate_per_second: " + strconv.Itoa(perSecond) + "\n"
	if reconcile != "" {
		yml += "      reconcile: " + reconcile + "\n"
	}
	return f, yml
}

// responseData is a webhook's event_data: the response as the API lists it.
func responseData(t *testing.T, w delightedgen.Webhook) map[string]any {
	t.Helper()
	d, err := w.Data()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// rowsBySubject counts the warehouse rows of each response, and the
// event ids of the rows that came from the API ("api:…").
func rowsBySubject(t *testing.T, pool *pgxpool.Pool, schema string) (rows map[string]int, fromAPI map[string]bool) {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT subject_id, event_id FROM `+schema+`.feedback_events WHERE subject_type = 'response'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	rows, fromAPI = map[string]int{}, map[string]bool{}
	for rs.Next() {
		var subj, id string
		if err := rs.Scan(&subj, &id); err != nil {
			t.Fatal(err)
		}
		rows[subj]++
		if strings.HasPrefix(id, "api:") {
			fromAPI[subj] = true
		}
	}
	return rows, fromAPI
}

func waitSubjects(t *testing.T, pool *pgxpool.Pool, schema string, want int, timeout time.Duration) map[string]int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rows, _ := rowsBySubject(t, pool, schema)
		if len(rows) >= want {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d responses in the warehouse after %s, want %d", len(rows), timeout, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wantExactlyTheDroppedFromTheAPI waits for n responses in the warehouse
// and checks each has one row, and that the rows that came from the API
// ("api:…" event ids) are exactly the dropped ones.
func wantExactlyTheDroppedFromTheAPI(t *testing.T, pool *pgxpool.Pool, schema string, n int, dropped map[string]bool) {
	t.Helper()
	rows := waitSubjects(t, pool, schema, n, 60*time.Second)
	_, fromAPI := rowsBySubject(t, pool, schema)
	for subj, c := range rows {
		if c != 1 {
			t.Errorf("response %s has %d rows", subj, c)
		}
	}
	if len(fromAPI) != len(dropped) {
		t.Fatalf("%d responses came from the API, want the %d dropped (%v): %v", len(fromAPI), len(dropped), dropped, fromAPI)
	}
	for subj := range dropped {
		if !fromAPI[subj] {
			t.Errorf("dropped response %s did not come through reconciliation", subj)
		}
	}
}

// metricValue scrapes a service and returns a series' value (-1: absent).
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if v, ok := seriesValue(string(b), series); ok {
		return v
	}
	return -1
}

// The provider drops 5 % of the webhooks (they never arrive). The source's
// reconciliation lists the provider's recent responses, asks the dedupe
// store which it has seen, and produces exactly the missing ones: each
// becomes exactly one warehouse row, the gap metric and closedloopctl status
// count them, later runs find nothing more (and produce nothing), and the
// provider's rate limit is never exceeded (the fake counts every second).
func TestReconciliationFindsExactlyTheWebhooksThatNeverCame(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	api, apiYAML := delightedAPI(t, 5, "{every: 2s, window: 1h, settle: 1s}")
	p := pipelineSpec("e2e_reconcile", infra.broker.Addrs, infra.redis.Addr, "E2E_DELIGHTED_API_KEY="+delightedAPIKey, "ADMIN_GAUGE_INTERVAL=1s")
	p.Run = []string{"sink-warehouse", "enricher", "normalizer", "ingress", "admin"}
	p.AdminTokens = map[string]string{"ops": "operator"}
	p.DelightedAPIYAML = apiYAML
	startPipeline(t, p)

	gen := delightedgen.New([]byte(p.Secret), 21)
	dropped := map[string]bool{}
	const n = 100
	for i := range n {
		_, w := gen.Response() // the response's final state, as the API lists it
		if err := api.AddResponse(responseData(t, w)); err != nil {
			t.Fatal(err)
		}
		if i%20 == 7 { // 5 % never arrive
			dropped[w.Subject] = true
			continue
		}
		send(t, p, w, http.StatusAccepted)
	}
	pool := db(t)
	wantExactlyTheDroppedFromTheAPI(t, pool, p.Schema(), n, dropped)
	// Two more runs find nothing more.
	time.Sleep(5 * time.Second)
	if rows2, _ := rowsBySubject(t, pool, p.Schema()); len(rows2) != n {
		t.Fatalf("%d responses after more runs, want %d", len(rows2), n)
	}
	if v := metricValue(t, p.OpsAddrs["admin"], `closedloop_reconcile_found_total{source="delighted"}`); v != float64(len(dropped)) {
		t.Errorf("closedloop_reconcile_found_total = %v, want %d", v, len(dropped))
	}
	if v := metricValue(t, p.OpsAddrs["admin"], `closedloop_reconcile_found_24h{source="delighted"}`); v != float64(len(dropped)) {
		t.Errorf("closedloop_reconcile_found_24h = %v, want %d", v, len(dropped))
	}
	out, code := ctl(t, p, "ops", "status")
	if !strings.Contains(out, "delighted: "+strconv.Itoa(len(dropped))+" events arrived only through reconciliation") {
		t.Errorf("closedloopctl status (exit %d) does not count them:\n%s", code, out)
	}
	if st := api.Stats(); st.RateLimited != 0 || st.MaxPerSecond > 5 {
		t.Errorf("the provider's limit of 5/s was exceeded: %+v", st)
	}
	t.Logf("reconciliation: %d dropped webhooks found; the fake saw %+v", len(dropped), api.Stats())
}

// A backfill over a range that overlaps the webhooks adds no row for what
// already arrived; killed -9 in the middle, the admin resumes the job at its
// cursor when it starts again, and it finishes with every response once — no
// duplicate, no gap — without listing the range from the start again.
func TestABackfillAddsNothingForWhatArrivedAndResumesAfterAKill(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	api, apiYAML := delightedAPI(t, 50, "")
	api.Latency.Set(150 * time.Millisecond)
	p := pipelineSpec("e2e_backfill", infra.broker.Addrs, infra.redis.Addr, "E2E_DELIGHTED_API_KEY="+delightedAPIKey)
	p.Run = []string{"sink-warehouse", "enricher", "normalizer", "ingress", "admin"}
	p.AdminTokens = map[string]string{"ops": "operator"}
	p.DelightedAPIYAML = apiYAML
	startPipeline(t, p)

	gen := delightedgen.New([]byte(p.Secret), 33)
	const n, sent = 2000, 300
	start := time.Now().Add(-time.Minute)
	for i := range n {
		_, w := gen.Response()
		if err := api.AddResponse(responseData(t, w)); err != nil {
			t.Fatal(err)
		}
		if i < sent {
			send(t, p, w, http.StatusAccepted)
		}
	}
	pool := db(t)
	waitSubjects(t, pool, p.Schema(), sent, 60*time.Second)

	out, code := ctl(t, p, "ops", "backfill", "start", "delighted", "--since", start.Format(time.RFC3339), "--detach", "-o", "json")
	if code != 0 {
		t.Fatalf("backfill start: exit %d: %s", code, out)
	}
	var started struct {
		Job struct{ ID string } `json:"job"`
	}
	if err := json.Unmarshal([]byte(out), &started); err != nil || started.Job.ID == "" {
		t.Fatalf("backfill start -o json: %v: %s", err, out)
	}
	id := started.Job.ID
	// Kill the admin once the job has produced some pages.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := ctl(t, p, "ops", "backfill", "ls", "-o", "json")
		if m := regexp.MustCompile(`"pages":\s*"?([0-9]+)`).FindStringSubmatch(out); m != nil {
			if pages, _ := strconv.Atoi(m[1]); pages >= 6 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job made no progress: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	requestsBefore := api.Stats().Requests
	p.Services["admin"].Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.Restart(ctx, "admin"); err != nil {
		t.Fatal(err)
	}
	out, code = ctl(t, p, "ops", "backfill", "watch", id)
	if code != 0 || !strings.Contains(out, "DONE") && !strings.Contains(out, "done") {
		t.Fatalf("backfill watch after the restart: exit %d:\n%s", code, out)
	}
	rows := waitSubjects(t, pool, p.Schema(), n, 90*time.Second)
	time.Sleep(2 * time.Second)
	rows, fromAPI := rowsBySubject(t, pool, p.Schema())
	dups := 0
	for _, c := range rows {
		if c != 1 {
			dups++
		}
	}
	if len(rows) != n || dups != 0 || len(fromAPI) != n-sent {
		t.Fatalf("%d responses (want %d), %d with more than one row, %d from the API (want %d)", len(rows), n, dups, len(fromAPI), n-sent)
	}
	// 2000 responses at 100 a page are 21 requests; resumed, not restarted:
	// at most the page in flight is fetched again.
	pages := (n+99)/100 + 2 // the empty page, and the unsubscribes' empty page
	if total := api.Stats().Requests; total > pages+2 {
		t.Fatalf("the fake saw %d requests for %d pages (%d before the kill): the job started over", total, pages, requestsBefore)
	}
	ls, _ := ctl(t, p, "ops", "backfill", "ls", "-o", "json")
	if !strings.Contains(ls, id) || !regexp.MustCompile(`"resumed":\s*1`).MatchString(ls) || !strings.Contains(ls, "BACKFILL_STATE_DONE") {
		t.Fatalf("backfill ls does not list %s done after one resume:\n%s", id, ls)
	}
}

// The same through Typeform: a form's responses in the local Typeform API,
// signed form_response webhooks for most of them; reconciliation of the
// typeform source (its Responses API, 2 requests/s) finds exactly the ones
// whose webhooks never came — the API items map to the same responses, so
// the others add nothing.
func TestTypeformReconciliationFindsTheMissingResponses(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	api := typeformfake.New("tf-e2e-token")
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	const secret = "tf_e2e_signing_secret"
	p := pipelineSpec("e2e_tfrec", infra.broker.Addrs, infra.redis.Addr, "E2E_TYPEFORM_TOKEN=tf-e2e-token", "E2E_TYPEFORM_SECRET="+secret)
	p.Run = []string{"sink-warehouse", "enricher", "normalizer", "ingress", "admin"}
	p.AdminTokens = map[string]string{"ops": "operator"}
	p.SourcesYAML = "  - name: typeform-nps\n    provider: typeform\n    secrets: [env:E2E_TYPEFORM_SECRET]\n    ingest_tokens: [env:CLOSEDLOOP_DEV_INGEST_TOKEN]\n" +
		"    api:\n      base_url: " + srv.URL + "\n      key: env:E2E_TYPEFORM_TOKEN\n      forms: [frmE2E]\n      rate_per_second: 2\n" +
		"      reconcile: {every: 2s, window: 1h, settle: 1s}\n"
	startPipeline(t, p)
	url := strings.Replace(p.IngressURL, "/v1/hooks/delighted/", "/v1/hooks/typeform-nps/", 1)
	tf, _ := providers.Get("typeform")

	const n = 40
	dropped := map[string]bool{}
	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	for i := range n {
		tok := "tfe2e" + strconv.Itoa(i)
		ts := at.Add(time.Duration(i) * time.Second).Format(time.RFC3339)
		answers := []any{map[string]any{"type": "number", "number": i % 11, "field": map[string]any{"id": "nps1", "type": "opinion_scale", "ref": "nps"}},
			map[string]any{"type": "text", "text": "answer " + tok, "field": map[string]any{"id": "c1", "type": "long_text"}}}
		if err := api.AddResponse("frmE2E", map[string]any{"token": tok, "landed_at": ts, "submitted_at": ts, "answers": answers}); err != nil {
			t.Fatal(err)
		}
		if i%8 == 3 {
			dropped[tok] = true
			continue
		}
		body, _ := json.Marshal(map[string]any{"event_id": "01TFE2E" + strconv.Itoa(i), "event_type": "form_response",
			"form_response": map[string]any{"form_id": "frmE2E", "token": tok, "landed_at": ts, "submitted_at": ts, "answers": answers}})
		h, err := providers.Sign(tf, nil, []byte(secret), "", body, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("typeform webhook %d: %v %v", i, err, resp)
		}
		_ = resp.Body.Close()
	}
	wantExactlyTheDroppedFromTheAPI(t, db(t), p.Schema(), n, dropped)
	if st := api.Stats(); st.RateLimited != 0 || st.MaxPerSecond > 2 {
		t.Errorf("Typeform's limit of 2/s was exceeded: %+v", st)
	}
}
