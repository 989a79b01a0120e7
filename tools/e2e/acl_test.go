package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
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

// TestEachServiceRunsWithOnlyItsACLs runs the pipeline on a broker that
// speaks TLS, requires SCRAM-SHA-512 and checks ACLs, with each service
// logged in as its own user holding only kafkaio.ServiceGrants — the ACLs
// docs/deploy.md lists: webhooks become rows and webhook deliveries, an
// operator issues an ingest token the ingress then accepts, the status is
// healthy. A service logged in as another service's user stops at start-up
// saying which topics it may not use.
func TestEachServiceRunsWithOnlyItsACLs(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	const name = "e2e_acl"
	p := pipelineSpec(name, "", infra.redis.Addr)
	topics := kafkaio.NewTopics(p.TopicPrefix())
	groups := kafkaio.Groups{Normalizer: name + "-normalizer", Enricher: name + "-enricher", SinkWarehouse: name + "-sink-warehouse",
		SinkConsole: name + "-sink-console", SinkWebhook: name + "-sink-webhook"}
	p.Run = []string{"sink-warehouse", "sink-webhook", "enricher", "normalizer", "ingress", "admin"}

	// A user per service with its grants, in the devbroker's -users format.
	type acl struct {
		Resource   string   `json:"resource"`
		Name       string   `json:"name"`
		Prefixed   bool     `json:"prefixed"`
		Operations []string `json:"operations"`
	}
	type user struct {
		Mechanism string `json:"mechanism"`
		User      string `json:"user"`
		Password  string `json:"password"`
		ACLs      []acl  `json:"acls"`
	}
	var users []user
	p.ServiceEnv = map[string][]string{}
	for _, svc := range append(append([]string(nil), p.Run...), "topics") {
		grants, err := kafkaio.ServiceGrants(svc, topics, groups)
		if err != nil {
			t.Fatal(err)
		}
		u := user{Mechanism: kafkaio.MechanismSCRAMSHA512, User: "cl-" + svc, Password: "pw-" + svc + "-0123456789"}
		for _, g := range grants {
			u.ACLs = append(u.ACLs, acl{Resource: g.Resource, Name: g.Name, Prefixed: g.Prefixed, Operations: g.Operations})
		}
		users = append(users, u)
		if svc != "topics" {
			p.ServiceEnv[svc] = []string{"KAFKA_SASL_USERNAME=" + u.User, "E2E_KAFKA_PASSWORD=" + u.Password}
		}
	}
	dir := filepath.Join(infra.dir, name+"_broker")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(users)
	usersFile := filepath.Join(dir, "users.json")
	if err := os.WriteFile(usersFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pki, err := stack.WritePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The topics exist beforehand, made by an administrator: no service may
	// create one.
	broker, err := stack.StartSecureBroker(ctx, infra.binDir, dir, 0, 3, nil, stack.BrokerSecurity{
		CertFile: pki.CertFile, KeyFile: pki.KeyFile, Superuser: "SCRAM-SHA-512:kafka-admin:superuser-password", UsersFile: usersFile, ACLs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.Stop() })
	p.Brokers = broker.Addrs
	// The topics are made by `admin topics apply` as the topics user (its
	// grants only); the services start without KAFKA_CREATE_TOPICS.
	admin := []string{"CLOSEDLOOP_TOPIC_PREFIX=" + p.TopicPrefix(), "KAFKA_TLS_CA_FILE=" + pki.CAFile, "KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
		"KAFKA_SASL_USERNAME=cl-topics", "KAFKA_SASL_PASSWORD=env:TOPICS_PASSWORD", "TOPICS_PASSWORD=pw-topics-0123456789"}
	if out, err := stack.ApplyTopics(ctx, infra.binDir, broker.Addrs, admin...); err != nil || !strings.Contains(out, "applied") {
		t.Fatalf("%v\n%s", err, out)
	}
	check := exec.CommandContext(ctx, filepath.Join(infra.binDir, "admin"), "topics", "plan", "-check")
	check.Env = append([]string{"KAFKA_BROKERS=" + broker.Addrs}, admin...)
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "all as they should be") {
		t.Fatalf("topics plan -check after apply: %v\n%s", err, out)
	}
	p.TopicsMade = true
	rcv := newWebhookReceiver(t, "whsec_"+base64.StdEncoding.EncodeToString([]byte("e2e-acl-webhook-signing-key-32by")))
	p.SinksYAML = "  webhook:\n    endpoints:\n      - name: receiver\n        url: " + rcv.URL + "\n        secret: env:E2E_WEBHOOK_SECRET\n        timeout: 2s\n"
	p.AdminTokens = map[string]string{"ann": "operator"}
	p.Env = append(p.Env, "KAFKA_TLS_CA_FILE="+pki.CAFile, "KAFKA_SASL_MECHANISM=SCRAM-SHA-512", "KAFKA_SASL_PASSWORD=env:E2E_KAFKA_PASSWORD",
		"E2E_WEBHOOK_SECRET="+rcv.secret)
	startPipeline(t, p)

	gen := delightedgen.New([]byte(p.Secret), 17)
	client := &http.Client{Timeout: 5 * time.Second}
	want := map[string]bool{}
	send := func(url string) {
		created, _ := gen.Response()
		if code, err := delightedgen.Send(context.Background(), client, url, created); err != nil || code != http.StatusAccepted {
			t.Fatalf("send to %s: %d %v", url, code, err)
		}
		want[created.EventID] = true
	}
	for range 10 {
		send(p.IngressURL)
	}
	// An ingest token issued by an operator (the admin writes the control
	// topic, the ingress reads it).
	out, code := ctl(t, p, "ann", "tokens", "issue", "delighted", "-o", "json")
	var issued struct {
		URL string `json:"url"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &issued) != nil || issued.URL == "" {
		t.Fatalf("tokens issue (exit %d):\n%s", code, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		created, _ := gen.Response()
		code, err := delightedgen.Send(context.Background(), client, issued.URL, created)
		if err == nil && code == http.StatusAccepted {
			want[created.EventID] = true
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the issued ingest URL %s answers %d %v", issued.URL, code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := waitRows(t, db(t), p.Schema(), want, time.Minute)
	for id := range want {
		if got[id] != 1 {
			t.Fatalf("event %s has %d rows, want 1", id, got[id])
		}
	}
	for deadline := time.Now().Add(30 * time.Second); len(rcv.outcomes()) < len(want) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(rcv.outcomes()); n != len(want) {
		t.Fatalf("the webhook receiver has %d events, want %d", n, len(want))
	}
	if out, code := ctl(t, p, "ann", "status"); code != 0 {
		t.Fatalf("status (exit %d):\n%s", code, out)
	}
	if out, code := ctl(t, p, "ann", "dlq", "ls", "sink-warehouse"); code != 0 {
		t.Fatalf("dlq ls (exit %d):\n%s", code, out)
	}

	// The normalizer logged in as the ingress may not use its topics (real
	// Kafka answers the metadata request TOPIC_AUTHORIZATION_FAILED; the dev
	// broker says the topics are missing and then refuses their creation).
	env := append(append([]string(nil), p.Services["normalizer"].Env...), "OPS_ADDR=127.0.0.1:0", "GRPC_ADDR=127.0.0.1:0",
		"INSTANCE_ID=e2e-acl-wrong-user", "KAFKA_SASL_USERNAME=cl-ingress", "E2E_KAFKA_PASSWORD=pw-ingress-0123456789")
	cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer ccancel()
	cmd := exec.CommandContext(cctx, filepath.Join(infra.binDir, "normalizer"))
	cmd.Env = env
	wrong, err := cmd.CombinedOutput()
	if err == nil || cctx.Err() != nil || !strings.Contains(string(wrong), "user cl-ingress may not") {
		t.Fatalf("the normalizer as cl-ingress: %v, want a start-up failure naming the denied topics:\n%s", err, tail(string(wrong), 6))
	}
}
