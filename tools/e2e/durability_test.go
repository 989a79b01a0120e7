package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// TestEvery2xxSurvivesABrokerOutageAndTheIngressRecoversByItself keeps
// webhooks coming while the broker is stopped and started again, then
// checks that every webhook the ingress answered 2xx is in the raw topic.
func TestEvery2xxSurvivesABrokerOutageAndTheIngressRecoversByItself(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(infra.dir, "outage-broker")
	_ = os.MkdirAll(dir, 0o755)
	port, err := localinfra.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	broker, err := stack.StartBroker(ctx, infra.binDir, dir, port, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = broker.Stop() }()
	p := newPipelineOn(t, broker.Addrs, "e2e_outage", "INGRESS_PRODUCE_TIMEOUT=1s")
	gen := delightedgen.New([]byte(p.Secret), 4)

	var mu sync.Mutex
	accepted := map[string]bool{}
	codes := map[int]int{}
	stop := make(chan struct{})
	done := make(chan struct{})
	var senders sync.WaitGroup
	for range 8 { // eight concurrent senders: the outage happens mid-load
		senders.Add(1)
		go func() {
			defer senders.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				w, _ := gen.Response()
				mu.Unlock()
				code, err := delightedgen.Send(ctx, client, p.IngressURL, w)
				mu.Lock()
				if err == nil {
					codes[code]++
					if code/100 == 2 {
						accepted[w.EventID] = true
					}
				} else {
					codes[0]++
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	go func() { senders.Wait(); close(done) }()
	count := func(code int) int { mu.Lock(); defer mu.Unlock(); return codes[code] }

	time.Sleep(time.Second)
	before := count(202)
	if err := broker.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker stopped after %d accepted webhooks", before)
	deadline := time.Now().Add(20 * time.Second)
	for count(503) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if count(503) < 3 {
		t.Fatalf("the ingress did not answer 503 while the broker was down: %v", codes)
	}
	duringOutage := count(202)
	time.Sleep(2 * time.Second)
	if n := count(202); n != duringOutage {
		t.Fatalf("%d webhooks were answered 2xx while the broker was down", n-duringOutage)
	}
	restarted := time.Now()
	broker, err = stack.StartBroker(ctx, infra.binDir, dir, port, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	for count(202) < duringOutage+20 && time.Since(restarted) < 60*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	recovered := time.Since(restarted)
	close(stop)
	<-done
	if count(202) < duringOutage+20 {
		t.Fatalf("the ingress did not recover within 60s of the broker's return: %v", codes)
	}
	t.Logf("answers: %v; accepting again %s after the broker returned", codes, recovered.Round(time.Millisecond))

	found := map[string]bool{}
	for _, m := range readTopic(t, broker.Addrs, p.TopicPrefix()+"feedback.raw.v1") {
		found[string(m.Key)] = true
	}
	var lost []string
	for id := range accepted {
		if !found[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d webhooks answered 2xx are not in Kafka: %s", len(lost), len(accepted), strings.Join(lost[:min(5, len(lost))], ", "))
	}
	t.Logf("all %d webhooks answered 2xx are in the raw topic (%s)", len(accepted), strconv.Itoa(len(found))+" records")
}
