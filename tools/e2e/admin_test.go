package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/providers"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// ctl runs closedloopctl against the pipeline's admin service as caller
// (empty: no token) and returns its output and exit code.
func ctl(t *testing.T, p *stack.Pipeline, caller string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(infra.binDir, "closedloopctl"), append([]string{"--addr", p.AdminAddr()}, args...)...)
	cmd.Env = []string{"CLOSEDLOOP_ADMIN_TOKEN="}
	if caller != "" {
		cmd.Env = []string{"CLOSEDLOOP_ADMIN_TOKEN=" + p.AdminToken(caller)}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	t.Fatalf("closedloopctl: %v", err)
	return "", -1
}

// TestOperatorsFixDeadLettersRotateTokensAndWatchLagWithClosedloopctl runs
// the whole pipeline with the admin service and drives it with the
// closedloopctl binary, as an operator would: the warehouse rejects some
// events for good (a CHECK constraint) → they are dead letters → the
// constraint is dropped → `dlq replay` delivers each exactly once, and a
// second replay of the same ids is refused; a viewer cannot replay; an
// issued ingest URL works until revoked, then answers 404; pausing the sink
// makes the status show lag that falls after resume.
func TestOperatorsFixDeadLettersRotateTokensAndWatchLagWithClosedloopctl(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	p := pipelineSpec("e2e_admin", infra.broker.Addrs, infra.redis.Addr, "SINK_BREAKER_OPEN_FOR=1s")
	p.Run = []string{"sink-warehouse", "enricher", "normalizer", "ingress", "admin"}
	p.AdminTokens = map[string]string{"ann": "operator", "val": "viewer"}
	// A source of every other provider of the table: test events for each.
	p.Env = append(p.Env, "E2E_SECRET=e2e-provider-secret-0123456789", "E2E_WHSEC=whsec_"+base64.StdEncoding.EncodeToString([]byte("e2e-standard-webhooks-key")))
	for _, d := range providers.All() {
		if d.Name == "delighted" {
			continue
		}
		src := "  - name: " + d.Name + "\n    provider: " + d.Name + "\n"
		switch {
		case d.Scheme == providers.StandardWebhooks:
			src += "    secrets: [env:E2E_WHSEC]\n"
		case d.Configurable():
			src += "    secrets: [env:E2E_SECRET]\n    hmac: {header: X-E2E-Signature, algorithm: sha512, encoding: base64, signed: \"{timestamp}.{body}\", timestamp_header: X-E2E-Timestamp}\n    event_id: {path: meta.delivery}\n"
		case d.Signs():
			src += "    secrets: [env:E2E_SECRET]\n"
		}
		p.SourcesYAML += src
	}
	startPipeline(t, p)
	pool := db(t)
	gen := delightedgen.New([]byte(p.Secret), 21)
	ctx := context.Background()

	// The warehouse refuses rows of example.jp respondents (SQLSTATE 23514: permanent).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := pool.Exec(ctx, `ALTER TABLE `+p.Schema()+`.feedback_events ADD CONSTRAINT no_jp CHECK (respondent_email NOT LIKE '%@example.jp') NOT VALID`)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	ids := map[string]string{} // event id -> email
	for range 30 {
		c, u := gen.Response()
		for _, w := range []delightedgen.Webhook{c, u} {
			send(t, p, w, http.StatusAccepted)
			var body struct {
				EventData struct {
					Person struct{ Email string } `json:"person"`
				} `json:"event_data"`
			}
			_ = json.Unmarshal(w.Body, &body)
			ids[w.EventID] = body.EventData.Person.Email
		}
	}
	good, bad := map[string]bool{}, map[string]bool{}
	for id, email := range ids {
		if strings.HasSuffix(email, "@example.jp") {
			bad[id] = true
		} else {
			good[id] = true
		}
	}
	if len(bad) == 0 {
		t.Fatal("the generator sent no example.jp respondent; change the seed")
	}
	waitRows(t, pool, p.Schema(), good, 60*time.Second)

	var listed struct {
		DeadLetters []struct {
			ID      string `json:"id"`
			EventID string `json:"event_id"`
		} `json:"dead_letters"`
		TotalUnresolved int `json:"total_unresolved"`
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		out, code := ctl(t, p, "val", "-o", "json", "dlq", "ls", "sink-warehouse", "--limit", "1000")
		if code != 0 {
			t.Fatalf("dlq ls as a viewer: exit %d\n%s", code, out)
		}
		if err := json.Unmarshal([]byte(out), &listed); err != nil {
			t.Fatalf("dlq ls -o json: %v\n%s", err, out)
		}
		if listed.TotalUnresolved == len(bad) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters listed, want %d", listed.TotalUnresolved, len(bad))
		}
	}
	var dlIDs []string
	for _, d := range listed.DeadLetters {
		if !bad[d.EventID] {
			t.Fatalf("dead letter for %s, which was not refused", d.EventID)
		}
		dlIDs = append(dlIDs, d.ID)
	}
	out, code := ctl(t, p, "ann", "dlq", "show", dlIDs[0])
	if code != 0 || !strings.Contains(out, "23514") || !strings.Contains(out, "attempts:") {
		t.Fatalf("dlq show: exit %d\n%s", code, out)
	}

	// A viewer cannot replay; no token is not signed in.
	if out, code := ctl(t, p, "val", "dlq", "replay", dlIDs[0]); code != 3 || !strings.Contains(out, "operator role") {
		t.Fatalf("replay as a viewer: exit %d\n%s", code, out)
	}
	if out, code := ctl(t, p, "", "status"); code != 3 || !strings.Contains(out, "not signed in") {
		t.Fatalf("status without a token: exit %d\n%s", code, out)
	}

	// The cause is fixed; the operator replays every open dead letter.
	if _, err := pool.Exec(ctx, `ALTER TABLE `+p.Schema()+`.feedback_events DROP CONSTRAINT no_jp`); err != nil {
		t.Fatal(err)
	}
	if out, code := ctl(t, p, "ann", "dlq", "replay", "--sink", "sink-warehouse", "--dry-run"); code != 0 || !strings.Contains(out, "would be replayed") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	out, code = ctl(t, p, "ann", "dlq", "replay", "--sink", "sink-warehouse")
	if code != 0 || !strings.Contains(out, "replayed") {
		t.Fatalf("dlq replay: exit %d\n%s", code, out)
	}
	t.Logf("closedloopctl dlq replay --sink sink-warehouse: %s", strings.TrimSpace(out))
	all := map[string]bool{}
	for id := range ids {
		all[id] = true
	}
	rows := waitRows(t, pool, p.Schema(), all, 60*time.Second)
	for id := range ids {
		if rows[id] != 1 {
			t.Errorf("event %s has %d rows after the replay, want 1", id, rows[id])
		}
	}
	if out, code := ctl(t, p, "ann", "dlq", "replay", dlIDs[0]); code != 5 || !strings.Contains(out, "already replayed") {
		t.Fatalf("second replay of the same dead letter: exit %d\n%s", code, out)
	}
	if out, _ := ctl(t, p, "val", "dlq", "ls", "sink-warehouse"); !strings.Contains(out, "0 open dead letter(s)") {
		t.Fatalf("after the replay:\n%s", out)
	}

	// A range replay of the raw topic rewrites the warehouse rows (as after
	// a mapping fix): the rows are damaged here, the replay repairs them.
	tag, err := pool.Exec(ctx, `UPDATE `+p.Schema()+`.feedback_events SET comment = 'damaged', segment = 'damaged'`)
	if err != nil {
		t.Fatal(err)
	}
	damaged := tag.RowsAffected()
	out, code = ctl(t, p, "ann", "replay", "raw", "--since", "10m", "--dry-run")
	if code != 0 || !strings.Contains(out, "DONE") && !strings.Contains(out, "done") {
		t.Fatalf("replay raw --dry-run: exit %d\n%s", code, out)
	}
	out, code = ctl(t, p, "ann", "replay", "raw", "--since", "10m", "--rate", "2000")
	if code != 0 || !strings.Contains(out, "done") {
		t.Fatalf("replay raw: exit %d\n%s", code, out)
	}
	t.Logf("closedloopctl replay raw --since 10m: %s", strings.TrimSpace(out[strings.LastIndex(out, "\r")+1:]))
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		var left int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+p.Schema()+`.feedback_events WHERE segment = 'damaged'`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d damaged rows still damaged after the replay", left, damaged)
		}
	}
	rows = waitRows(t, pool, p.Schema(), all, 10*time.Second)
	for id := range ids {
		if rows[id] != 1 {
			t.Errorf("event %s has %d rows after the range replay, want 1", id, rows[id])
		}
	}
	// The dry run counted without leaving a job behind.
	if out, code := ctl(t, p, "val", "replay", "ls"); code != 0 || strings.Count(out, "done") != 1 {
		t.Fatalf("replay ls: exit %d\n%s", code, out)
	}
	if out, code := ctl(t, p, "ann", "dlq", "discard", dlIDs[0], "--reason", "e2e"); code != 5 || !strings.Contains(out, "already replayed") {
		t.Fatalf("discarding a replayed dead letter: exit %d\n%s", code, out)
	}
	// A job running when the admin service dies is reported interrupted.
	out, code = ctl(t, p, "ann", "replay", "raw", "--since", "10m", "--rate", "2", "--detach")
	if code != 0 {
		t.Fatalf("replay --detach: exit %d\n%s", code, out)
	}
	time.Sleep(1500 * time.Millisecond) // a progress record is written every second
	p.Services["admin"].Kill()
	if err := p.Restart(ctx, "admin"); err != nil {
		t.Fatal(err)
	}
	if out, code := ctl(t, p, "val", "replay", "ls"); code != 0 || !strings.Contains(out, "interrupted") {
		t.Fatalf("after the admin was killed mid-job: exit %d\n%s", code, out)
	}

	// A signed test event through the real ingress reaches every stage and the sink.
	out, code = ctl(t, p, "ann", "test-event", "delighted")
	if code != 0 || !strings.Contains(out, "sink-warehouse") || strings.Contains(out, "false") {
		t.Fatalf("test-event: exit %d\n%s", code, out)
	}
	t.Logf("closedloopctl test-event delighted:\n%s", out)
	// Every provider's test event, signed its own way, reaches the warehouse
	// flagged test.
	for _, d := range providers.All() {
		if d.Name == "delighted" {
			continue
		}
		if out, code := ctl(t, p, "ann", "test-event", d.Name); code != 0 || strings.Contains(out, "false") {
			t.Errorf("test-event %s: exit %d\n%s", d.Name, code, out)
		}
	}
	var testRows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+p.Schema()+`.feedback_events WHERE is_test`).Scan(&testRows); err != nil || testRows != len(providers.All()) {
		t.Fatalf("test event rows flagged test: %d, want one per provider (%d), %v", testRows, len(providers.All()), err)
	}

	// Token rotation: an issued URL works until it is revoked.
	out, code = ctl(t, p, "ann", "-o", "json", "tokens", "issue", "delighted")
	var issued struct {
		Token struct {
			TokenID string `json:"token_id"`
		} `json:"token"`
		URL string `json:"url"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &issued) != nil || issued.URL == "" {
		t.Fatalf("tokens issue: exit %d\n%s", code, out)
	}
	c, _ := gen.Response()
	sendTo := func(url string, w delightedgen.Webhook) int {
		code, err := delightedgen.Send(ctx, http.DefaultClient, url, w)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	for deadline := time.Now().Add(5 * time.Second); sendTo(issued.URL, c) != http.StatusAccepted; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the issued ingest URL is not accepted")
		}
	}
	if out, code := ctl(t, p, "val", "sources"); code != 0 || !strings.Contains(out, issued.Token.TokenID) || strings.Contains(out, issued.URL) {
		t.Fatalf("sources must list the token id and never the URL: exit %d\n%s", code, out)
	}
	if out, code := ctl(t, p, "val", "sources", "delighted"); code != 0 || !strings.Contains(out, issued.Token.TokenID) {
		t.Fatalf("sources delighted: exit %d\n%s", code, out)
	}
	if out, code := ctl(t, p, "val", "sources", "nosuch"); code != 4 || !strings.Contains(out, "delighted") {
		t.Fatalf("an unknown source must be exit 4 naming the configured ones: exit %d\n%s", code, out)
	}
	if out, code := ctl(t, p, "ann", "tokens", "revoke", "delighted", issued.Token.TokenID); code != 0 {
		t.Fatalf("tokens revoke: exit %d\n%s", code, out)
	}
	revokedAt := time.Now()
	for sendTo(issued.URL, c) != http.StatusNotFound {
		if time.Since(revokedAt) > 5*time.Second {
			t.Fatal("the revoked URL is still accepted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a revoked ingest URL answered 404 after %s", time.Since(revokedAt).Round(10*time.Millisecond))

	// Pause the sink: the status shows lag rising; resume: it falls to zero.
	if out, code := ctl(t, p, "ann", "pause", "sink-warehouse", "--reason", "e2e maintenance"); code != 0 || !strings.Contains(out, "true") {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	for range 10 {
		c, _ := gen.Response()
		send(t, p, c, http.StatusAccepted)
	}
	lagOf := func() (int, string) {
		out, _ := ctl(t, p, "val", "-o", "json", "status")
		var st struct {
			Stages []struct {
				Name string `json:"name"`
				Lag  string `json:"lag"`
			} `json:"stages"`
		}
		_ = json.Unmarshal([]byte(out), &st)
		for _, s := range st.Stages {
			if s.Name == "sink-warehouse" {
				n := 0
				_ = json.Unmarshal([]byte(s.Lag), &n)
				return n, out
			}
		}
		return -1, out
	}
	var paused int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		paused, out = lagOf()
		if paused >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("paused sink: lag %d, want ≥ 10\n%s", paused, out)
		}
	}
	if out, code := ctl(t, p, "val", "status"); code != 1 || !strings.Contains(out, "paused") || !strings.Contains(out, "e2e maintenance") {
		t.Fatalf("status with a paused sink must be unhealthy and say why: exit %d\n%s", code, out)
	}
	if out, code := ctl(t, p, "ann", "resume", "sink-warehouse"); code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		n, out := lagOf()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after resume the lag stays %d\n%s", n, out)
		}
	}
	// A stage other than a sink pauses the same way.
	if out, code := ctl(t, p, "ann", "pause", "normalizer", "--reason", "mapping deploy"); code != 0 || !strings.Contains(out, "true") {
		t.Fatalf("pause normalizer: exit %d\n%s", code, out)
	}
	c2, _ := gen.Response()
	send(t, p, c2, http.StatusAccepted)
	if out, code := ctl(t, p, "val", "status"); code != 1 || !strings.Contains(out, "normalizer paused") {
		t.Fatalf("status with the normalizer paused: exit %d\n%s", code, out)
	}
	if out, code := ctl(t, p, "ann", "resume", "normalizer"); code != 0 {
		t.Fatalf("resume normalizer: exit %d\n%s", code, out)
	}
	waitRows(t, pool, p.Schema(), map[string]bool{c2.EventID: true}, 30*time.Second)

	out, code = ctl(t, p, "val", "status")
	t.Logf("lag %d while paused, 0 after resume; closedloopctl status (exit %d):\n%s", paused, code, out)
}
