package e2e

import (
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// TestADestinationOutageLosesNothingAndCatchesUpByItself runs the whole
// pipeline with both sinks — the warehouse behind a proxy that cuts
// PostgreSQL off, a webhook endpoint that answers 503 — and takes both
// destinations down for CLOSEDLOOP_E2E_OUTAGE (default 8s; `make
// e2e-outage` runs the full two minutes) while signed webhooks keep
// arriving, some twice. Afterwards: every event is one row and one webhook
// outcome (zero lost, zero duplicate), nothing was dead-lettered, and the
// sinks' lag returns to zero without anyone touching them.
func TestADestinationOutageLosesNothingAndCatchesUpByItself(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	outage := 8 * time.Second
	if v := os.Getenv("CLOSEDLOOP_E2E_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CLOSEDLOOP_E2E_OUTAGE: %v", err)
		}
		outage = d
	}
	proxy := newTCPProxy(t, infra.pg.Addr)
	rcv := newWebhookReceiver(t, "whsec_"+base64.StdEncoding.EncodeToString([]byte("outage-webhook-signing-key-bytes")))
	p := &stack.Pipeline{
		Name: "outage", BinDir: infra.binDir, Dir: infra.dir + "/outage", Brokers: infra.broker.Addrs, Redis: infra.redis.Addr,
		DatabaseURL: proxyURL(proxy), Secret: "dl_test_outage", Token: delightedgen.IngestToken(),
		Run: []string{"sink-warehouse", "sink-webhook", "enricher", "normalizer", "ingress"},
		SinksYAML: "  webhook:\n    endpoints:\n      - name: receiver\n        url: " + rcv.URL + "\n" +
			"        secret: env:E2E_WEBHOOK_SECRET\n        timeout: 2s\n",
		Env: []string{"E2E_WEBHOOK_SECRET=" + rcv.secret, "LOG_LEVEL=warn", "SINK_BREAKER_OPEN_FOR=2s"},
	}
	startPipeline(t, p)
	gen := delightedgen.New([]byte(p.Secret), 7)

	// Webhooks arrive at ~40/s from before the outage until after it.
	var mu sync.Mutex
	unique := map[string]bool{}
	stop := make(chan struct{})
	senderDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				senderDone <- nil
				return
			case <-tick.C:
			}
			c, u := gen.Response()
			for _, w := range []delightedgen.Webhook{c, u} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				code, err := delightedgen.Send(ctx, http.DefaultClient, p.IngressURL, w)
				if err == nil && code == http.StatusAccepted && i%5 == 0 { // the provider delivers it twice
					code, err = delightedgen.Send(ctx, http.DefaultClient, p.IngressURL, w)
				}
				cancel()
				if err != nil || code != http.StatusAccepted {
					senderDone <- err
					return
				}
				mu.Lock()
				unique[w.EventID] = true
				mu.Unlock()
			}
		}
	}()

	conns := map[string]adminv1.ServiceAdminServiceClient{}
	for _, svc := range []string{"sink-warehouse", "sink-webhook"} {
		conns[svc] = adminv1.NewServiceAdminServiceClient(serviceConn(t, p, svc))
	}
	status := func(svc string) *adminv1.GetStatusResponse {
		st, err := conns[svc].GetStatus(context.Background(), &adminv1.GetStatusRequest{})
		if err != nil {
			t.Fatalf("%s GetStatus: %v", svc, err)
		}
		return st
	}

	time.Sleep(2 * time.Second)
	t.Logf("both destinations down for %s", outage)
	proxy.SetDown(true)
	rcv.down.Store(true)
	opened := map[string]bool{}
	peakRSS := map[string]int{}
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for svc := range conns {
			for _, d := range status(svc).Destinations {
				if d.Breaker != adminv1.BreakerState_BREAKER_STATE_CLOSED {
					opened[svc] = true
				}
			}
			peakRSS[svc] = max(peakRSS[svc], stack.PeakRSSKiB(p.Services[svc].PID()))
		}
	}
	proxy.SetDown(false)
	rcv.down.Store(false)
	time.Sleep(2 * time.Second)
	close(stop)
	if err := <-senderDone; err != nil {
		t.Fatalf("sending webhooks: %v", err)
	}
	for svc := range conns {
		if !opened[svc] {
			t.Errorf("%s: the breaker never left closed during a %s outage", svc, outage)
		}
	}
	t.Logf("%d unique events sent; destinations back; peak RSS during the outage: sink-warehouse %d KiB, sink-webhook %d KiB",
		len(unique), peakRSS["sink-warehouse"], peakRSS["sink-webhook"])

	catchUp := time.Now()
	rows := waitRows(t, db(t), p.Schema(), unique, 2*time.Minute+outage)
	for id := range unique {
		if rows[id] != 1 {
			t.Errorf("event %s has %d rows, want 1", id, rows[id])
		}
	}
	if len(rows) != len(unique) {
		t.Errorf("%d rows for %d unique events", len(rows), len(unique))
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got := rcv.outcomes()
		missing := 0
		for id := range unique {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook endpoint is missing %d of %d events", missing, len(unique))
		}
	}
	t.Logf("caught up %s after the destinations came back; the webhook receiver saw %d repeated deliveries (deduplicated on webhook-id)",
		time.Since(catchUp).Round(100*time.Millisecond), rcv.resent.Load())
	if rcv.resent.Load() != 0 {
		t.Errorf("%d events reached the webhook endpoint twice without any crash", rcv.resent.Load())
	}
	for _, svc := range []string{"sink-warehouse", "sink-webhook"} {
		if n := len(readTopicIfAny(t, p.Brokers, p.TopicPrefix()+"feedback.dlq."+svc+".v1")); n != 0 {
			t.Errorf("%s dead-lettered %d events during an outage", svc, n)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		lag := int64(0)
		for svc := range conns {
			for _, c := range status(svc).Consumers {
				lag += c.Lag
			}
		}
		if lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sinks' lag is still %d", lag)
		}
	}
}

func proxyURL(p *tcpProxy) string {
	return "postgres://closedloop@" + p.Addr() + "/postgres?sslmode=disable"
}
