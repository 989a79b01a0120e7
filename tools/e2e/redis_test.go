package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
)

// TestWhileRedisIsDownTheNormalizerPausesAndThenCatchesUpLosingNothing
// stops the normalizer's Redis: webhooks are still accepted (the ingress
// needs no Redis), nothing is normalized without dedupe, and once Redis is
// back every event arrives exactly once, without a restart.
func TestWhileRedisIsDownTheNormalizerPausesAndThenCatchesUpLosingNothing(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(infra.dir, "own-redis")
	_ = os.MkdirAll(dir, 0o755)
	port, err := localinfra.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	redis, err := localinfra.StartRedisOn(ctx, dir, port)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { redis.Stop() }()
	p := newPipelineWith(t, infra.broker.Addrs, redis.Addr, "e2e_redis")
	gen := delightedgen.New([]byte(p.Secret), 5)
	pool := db(t)

	first := map[string]bool{}
	for range 5 {
		c, _ := gen.Response()
		send(t, p, c, http.StatusAccepted)
		first[c.EventID] = true
	}
	waitRows(t, pool, p.Schema(), first, 30*time.Second)

	redis.Stop()
	during := map[string]bool{}
	for range 20 {
		c, u := gen.Response()
		send(t, p, c, http.StatusAccepted)
		send(t, p, u, http.StatusAccepted)
		during[c.EventID], during[u.EventID] = true, true
	}
	time.Sleep(3 * time.Second)
	rows := rowsByEventID(t, pool, p.Schema())
	for id := range during {
		if rows[id] > 0 {
			t.Fatalf("event %s was normalized while Redis was down: dedupe was skipped", id)
		}
	}
	if !p.Services["normalizer"].Running() {
		t.Fatal("the normalizer exited while Redis was down")
	}
	t.Logf("Redis down: %d webhooks accepted, none normalized, the normalizer waits", len(during))

	restarted := time.Now()
	if redis, err = localinfra.StartRedisOn(ctx, dir, port); err != nil {
		t.Fatal(err)
	}
	all := map[string]bool{}
	for id := range first {
		all[id] = true
	}
	for id := range during {
		all[id] = true
	}
	got := waitRows(t, pool, p.Schema(), all, 60*time.Second)
	for id, n := range got {
		if n != 1 {
			t.Errorf("event %s has %d rows", id, n)
		}
	}
	if len(got) != len(all) {
		t.Fatalf("%d rows for %d events", len(got), len(all))
	}
	t.Logf("Redis back: all %d events in the warehouse once each, %s after the restart", len(all), time.Since(restarted).Round(100*time.Millisecond))
}
