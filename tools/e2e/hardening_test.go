package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/closedloop/closedloop/libs/audit"
	"github.com/closedloop/closedloop/libs/grpcserver"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// withComment returns w with its comment replaced by one of n bytes, signed again.
func withComment(t *testing.T, secret []byte, w delightedgen.Webhook, n int) delightedgen.Webhook {
	t.Helper()
	var env map[string]any
	if err := json.Unmarshal(w.Body, &env); err != nil {
		t.Fatal(err)
	}
	env["event_data"].(map[string]any)["comment"] = strings.Repeat("The export keeps failing. ", n/26+1)[:n]
	body, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	w.Body, w.Signature = body, delightedgen.Sign(secret, body)
	return w
}

// Finding 1 of the hardening review, end to end through the processes: a
// signed 600 kB response was accepted, its normalized event did not fit in
// the topic, and the normalizer retried it forever — none of the 22 events
// after it on the partition was normalized. A signed body of exactly 1 MiB
// got 503 every time, and 30 concurrent 200 kB bodies made small ones fail.
func TestHardening(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	p := newPipeline(t, "e2e_hardening")
	t.Run("large signed webhooks never stall a partition", func(t *testing.T) { largeWebhooks(t, p) })
	t.Run("service ports need the service token and audit mutations", func(t *testing.T) { servicePorts(t, p) })
}

// Finding 2 of the hardening review: PauseDestination on the normalizer's
// port answered OK with no token and left no audit record.
func servicePorts(t *testing.T, p *stack.Pipeline) {
	ctx := context.Background()
	anon, err := grpc.NewClient(p.GRPCAddrs["normalizer"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	pause := &adminv1.PauseDestinationRequest{Destination: "normalizer", Reason: "e2e"}
	if _, err := adminv1.NewServiceAdminServiceClient(anon).PauseDestination(ctx, pause); grpcstatus.Code(err) != codes.Unauthenticated {
		t.Fatalf("PauseDestination without a token: %v, want Unauthenticated", err)
	}
	if _, err := adminv1.NewSchemaDriftServiceClient(anon).ListSchemaDrift(ctx, &adminv1.ListSchemaDriftRequest{}); grpcstatus.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListSchemaDrift without a token: %v, want Unauthenticated", err)
	}
	svc := adminv1.NewServiceAdminServiceClient(serviceConn(t, p, "normalizer"))
	st, err := svc.GetStatus(ctx, &adminv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range st.Destinations {
		if d.Paused {
			t.Fatalf("the normalizer was paused by a call without a token: %v", d)
		}
	}
	if _, err := svc.PauseDestination(grpcserver.ActingFor(ctx, "e2e-operator", "operator"), pause); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ResumeDestination(ctx, &adminv1.ResumeDestinationRequest{Destination: "normalizer"}); err != nil {
		t.Fatal(err)
	}
	// The audit topic has the refused pause and both mutations, each
	// requested before it ran and completed after.
	var phases []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		phases = phases[:0]
		for _, m := range readTopicIfAny(t, p.Brokers, p.TopicPrefix()+"closedloop.audit.v1") {
			var e audit.Entry
			if json.Unmarshal(m.Value, &e) == nil && e.Service == "normalizer" {
				phases = append(phases, e.Who+" "+e.Method[strings.LastIndex(e.Method, "/")+1:]+" "+e.Phase+" "+e.Result)
			}
		}
		if len(phases) >= 5 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	want := []string{"? PauseDestination completed Unauthenticated", "e2e-operator PauseDestination requested ", "e2e-operator PauseDestination completed OK",
		"? ResumeDestination requested ", "? ResumeDestination completed OK"}
	// Records are keyed by who: in order per caller, not across callers.
	byWho := func(l []string) {
		sort.SliceStable(l, func(i, j int) bool { return strings.Fields(l[i])[0] < strings.Fields(l[j])[0] })
	}
	byWho(phases)
	byWho(want)
	if strings.Join(phases, "|") != strings.Join(want, "|") {
		t.Fatalf("audit trail of the normalizer:\n%s\nwant\n%s", strings.Join(phases, "\n"), strings.Join(want, "\n"))
	}
}

func largeWebhooks(t *testing.T, p *stack.Pipeline) {
	gen := delightedgen.New([]byte(p.Secret), 7)
	want := map[string]bool{}

	big, _ := gen.Response()
	big = withComment(t, gen.Secret, big, 600_000)
	send(t, p, big, http.StatusAccepted)
	want[big.EventID] = true
	for range 11 {
		c, u := gen.Response()
		send(t, p, c, http.StatusAccepted)
		send(t, p, u, http.StatusAccepted)
		want[c.EventID], want[u.EventID] = true, true
	}

	// Exactly 1 MiB cannot be stored in a topic of Kafka's default 1 MiB
	// limit (the record needs its envelope too): 413, at once, not 503.
	huge, _ := gen.Response()
	huge = withComment(t, gen.Secret, huge, 1<<20-len(huge.Body)+len(`null`)-len(`""`))
	if len(huge.Body) != 1<<20 {
		t.Fatalf("built a %d-byte body, want 1 MiB", len(huge.Body))
	}
	send(t, p, huge, http.StatusRequestEntityTooLarge)

	// 30 concurrent 200 kB bodies: every one accepted.
	var wg sync.WaitGroup
	codes := make([]int, 30)
	errs := make([]error, 30)
	for i := range codes {
		c, _ := gen.Response()
		c = withComment(t, gen.Secret, c, 200_000)
		want[c.EventID] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			codes[i], errs[i] = delightedgen.Send(ctx, http.DefaultClient, p.IngressURL, c)
		}()
	}
	wg.Wait()
	for i := range codes {
		if codes[i] != http.StatusAccepted {
			t.Fatalf("concurrent 200 kB webhook %d: %d %v", i, codes[i], errs[i])
		}
	}

	rows := waitRows(t, db(t), p.Schema(), want, 60*time.Second)
	for id := range want {
		if rows[id] != 1 {
			t.Fatalf("event %s has %d rows, want 1", id, rows[id])
		}
	}
}
