package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// secureBroker starts a devbroker whose listeners speak TLS (a throwaway
// CA) and require a SCRAM-SHA-512 login.
func secureBroker(t *testing.T, name string, sec stack.BrokerSecurity) (stack.PKI, *stack.Broker) {
	t.Helper()
	dir := filepath.Join(infra.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pki, err := stack.WritePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	sec.CertFile, sec.KeyFile = pki.CertFile, pki.KeyFile
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := stack.StartSecureBroker(ctx, infra.binDir, dir, 0, 3, nil, sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	return pki, b
}

// TestThePipelineRunsOverTLSWithSCRAM runs every service against a broker
// that only speaks TLS and requires a SCRAM-SHA-512 login: webhooks become
// rows. The same service with a wrong password, or trusting another CA,
// stops at start-up at once, saying what to fix.
func TestThePipelineRunsOverTLSWithSCRAM(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	const pass = "e2e-scram-password-0123456789"
	pki, broker := secureBroker(t, "e2e_tls_broker", stack.BrokerSecurity{Superuser: kafkaio.MechanismSCRAMSHA512 + ":closedloop:" + pass})
	security := []string{"KAFKA_TLS_CA_FILE=" + pki.CAFile, "KAFKA_SASL_MECHANISM=SCRAM-SHA-512", "KAFKA_SASL_USERNAME=closedloop",
		"KAFKA_SASL_PASSWORD=env:E2E_KAFKA_PASSWORD", "E2E_KAFKA_PASSWORD=" + pass}
	p := pipelineSpec("e2e_tls", broker.Addrs, infra.redis.Addr, security...)
	p.Run = []string{"sink-warehouse", "enricher", "normalizer", "ingress", "admin"}
	p.AdminTokens = map[string]string{"ann": "viewer"}
	startPipeline(t, p)

	gen := delightedgen.New([]byte(p.Secret), 7)
	client := &http.Client{Timeout: 5 * time.Second}
	want := map[string]bool{}
	for range 20 {
		created, _ := gen.Response()
		if code, err := delightedgen.Send(context.Background(), client, p.IngressURL, created); err != nil || code != http.StatusAccepted {
			t.Fatalf("send: %d %v", code, err)
		}
		want[created.EventID] = true
	}
	got := waitRows(t, db(t), p.Schema(), want, time.Minute)
	for id := range want {
		if got[id] != 1 {
			t.Fatalf("event %s has %d rows over TLS+SCRAM, want 1", id, got[id])
		}
	}
	if out, code := ctl(t, p, "ann", "status"); code != 0 || !strings.Contains(out, "healthy") {
		t.Fatalf("status over TLS+SCRAM (exit %d):\n%s", code, out)
	}
	// The ingress's request durations, by source, method and status, in
	// explicit buckets down to a quarter millisecond.
	resp, err := http.Get("http://" + p.OpsAddrs["ingress"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if want := `http_server_request_duration_seconds_bucket{closedloop_source="delighted",http_request_method="POST",http_response_status_code="202"`; !strings.Contains(string(metrics), want) ||
		!strings.Contains(string(metrics), `le="0.00025"`) {
		t.Errorf("the ingress's /metrics lacks %s… with explicit buckets", want)
	}

	// A wrong password and an untrusted CA fail fast with what to fix.
	base := p.Services["normalizer"].Env
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"wrong password", []string{"E2E_KAFKA_PASSWORD=not-the-password"}, "the SASL login of user"},
		{"another CA", []string{"KAFKA_TLS_CA_FILE=" + pki.OtherCAFile}, "not signed by a CA this process trusts: set KAFKA_TLS_CA_FILE"},
		{"no SASL", []string{"KAFKA_SASL_MECHANISM=", "KAFKA_SASL_USERNAME=", "KAFKA_SASL_PASSWORD="}, "its listener probably requires a SASL login"},
	} {
		env := append(append([]string(nil), base...), "OPS_ADDR=127.0.0.1:0", "GRPC_ADDR=127.0.0.1:0", "INSTANCE_ID=e2e-tls-"+strings.ReplaceAll(tc.name, " ", "-"))
		env = append(env, tc.env...)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(infra.binDir, "normalizer"))
		cmd.Env = env
		start := time.Now()
		out, err := cmd.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: exit %v after %s, want a start-up failure saying %q:\n%s", tc.name, err, time.Since(start).Round(time.Millisecond), tc.want, tail(string(out), 8))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
