package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closedloop/closedloop/tools/internal/delightedgen"
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
func TestLargeSignedWebhooksNeverStallAPartition(t *testing.T) {
	requireInfra(t)
	p := newPipeline(t, "e2e_size")
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
