package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/closedloop/closedloop/libs/audit"
	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

type audits struct {
	mu   sync.Mutex
	recs []kafkaio.Record
	fail error
}

func (a *audits) Produce(_ context.Context, recs ...kafkaio.Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.recs = append(a.recs, recs...)
	return nil
}

func TestTokensRolesAndTheAuditTrail(t *testing.T) {
	yml := "admin:\n  tokens:\n    - {name: ann, role: operator, token: env:A}\n    - {name: val, role: viewer, token: env:V}\n"
	env := map[string]string{"A": "operator-token-0123456789abcdef0123456789", "V": "viewer-token-0123456789abcdef0123456789"}
	p, err := config.ParsePipeline([]byte(yml), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	rec := &audits{}
	a := &Auth{Admin: func() *config.Admin { return &p.Admin }, Service: "admin",
		Audit: &audit.Writer{Topic: "audit", Producer: rec, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	ran := 0
	call := func(token, method string) (Caller, error) {
		ctx := context.Background()
		if token != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
		}
		var got Caller
		_, err := a.Unary(ctx, &adminv1.ReplayDeadLettersRequest{Ids: []string{"sink-warehouse/0/1"}}, &grpc.UnaryServerInfo{FullMethod: method},
			func(ctx context.Context, _ any) (any, error) { ran++; got = CallerOf(ctx); return "ok", nil })
		return got, err
	}
	const replay, list = "/closedloop.admin.v1.AdminService/ReplayDeadLetters", "/closedloop.admin.v1.AdminService/ListDeadLetters"
	for _, c := range []struct {
		token, method string
		want          codes.Code
	}{
		{"", list, codes.Unauthenticated}, {"nope-0123456789abcdef", list, codes.Unauthenticated},
		{env["V"], list, codes.OK}, {env["V"], replay, codes.PermissionDenied},
		{env["A"], replay, codes.OK}, {"", "/grpc.health.v1.Health/Check", codes.OK},
	} {
		who, err := call(c.token, c.method)
		if status.Code(err) != c.want {
			t.Errorf("%s with %q: %v, want %s", c.method, c.token, err, c.want)
		}
		if c.want == codes.OK && c.token == env["A"] && who.Name != "ann" {
			t.Errorf("caller %+v, want ann", who)
		}
	}
	// Two replay attempts were audited (the denied one, and the allowed one
	// before and after it ran); reads are not.
	if len(rec.recs) != 3 {
		t.Fatalf("%d audit records, want 3", len(rec.recs))
	}
	var denied, requested, done audit.Entry
	_ = json.Unmarshal(rec.recs[0].Value, &denied)
	_ = json.Unmarshal(rec.recs[1].Value, &requested)
	_ = json.Unmarshal(rec.recs[2].Value, &done)
	if denied.Who != "val" || denied.Result != "PermissionDenied" || requested.Who != "ann" || requested.Phase != audit.Requested ||
		done.Who != "ann" || done.Phase != audit.Completed || done.Result != "OK" ||
		string(done.Request) != `{"ids":["sink-warehouse/0/1"]}` || rec.recs[2].Topic != "audit" {
		t.Fatalf("audit records %+v / %+v / %+v", denied, requested, done)
	}

	// Finding 7: an audit record that cannot be written refuses the mutation.
	rec.fail = errors.New("broker down")
	before := ran
	if _, err := call(env["A"], replay); status.Code(err) != codes.Unavailable {
		t.Fatalf("a replay with the audit trail down: %v, want Unavailable", err)
	}
	if ran != before {
		t.Fatal("the replay ran although its audit record was not written")
	}
	if _, err := call(env["V"], list); err != nil {
		t.Fatalf("a read with the audit trail down: %v (reads are not audited)", err)
	}
}

func TestADNSEntryStandsForEveryAddressOfTheName(t *testing.T) {
	s := New(Options{Instances: map[string][]string{"normalizer": {"dns+localhost:9090", "10.0.0.7:9090"}}})
	got := s.addrs(context.Background(), "normalizer")
	found := false
	for _, a := range got {
		found = found || a == "127.0.0.1:9090"
	}
	if !found || got[len(got)-1] != "10.0.0.7:9090" {
		t.Fatalf("addrs = %v, want localhost's addresses and the literal one", got)
	}
}

// Finding 7 of the hardening review: a failed SendTestEvent put its
// temporary ingest URL (with the token) in the error, the audit topic and
// the log.
func TestAFailedTestEventPostDoesNotRevealItsURL(t *testing.T) {
	const secretPath = "/v1/hooks/delighted/tok_temporary_0123456789abcdefXYZ"
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1"+secretPath, nil)
	_, err := http.DefaultClient.Do(req)
	if err == nil {
		t.Skip("something listens on port 1")
	}
	if !strings.Contains(err.Error(), "tok_temporary") {
		t.Fatalf("the client's error no longer names the URL (%v): this test proves nothing", err)
	}
	if got := withoutURL(err).Error(); strings.Contains(got, "tok_temporary") || !strings.Contains(got, "Post") {
		t.Fatalf("withoutURL = %q", got)
	}
}
