package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/ingesttokens"
	"github.com/closedloop/closedloop/libs/kafkaio"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// send posts w and fails the test unless the status is want.
func send(t *testing.T, p *stack.Pipeline, w delightedgen.Webhook, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := delightedgen.Send(ctx, http.DefaultClient, p.IngressURL, w)
	if err != nil || code != want {
		t.Fatalf("POST %s: %d %v, want %d", w, code, err, want)
	}
}

func TestSignedWebhooksBecomeExactlyOneWarehouseRowEachWithOneTraceEndToEnd(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	spans := newSpanSink(t)
	p := newPipeline(t, "e2e_flow", "OTEL_EXPORTER_OTLP_ENDPOINT="+spans.URL, "OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_METRIC_EXPORT_INTERVAL=600000")
	gen := delightedgen.New([]byte(p.Secret), 1)

	unique := map[string]bool{}
	var all []delightedgen.Webhook
	for range 20 {
		c, u := gen.Response()
		all = append(all, c, u)
	}
	for range 4 {
		all = append(all, gen.Unsubscribe())
	}
	for i, w := range all {
		send(t, p, w, http.StatusAccepted)
		unique[w.EventID] = true
		if i%4 == 0 { // the provider delivers this one twice
			send(t, p, w, http.StatusAccepted)
		}
	}
	// A webhook whose body changed after signing, never sent intact.
	forged, _ := gen.Response()
	send(t, p, delightedgen.Tampered(forged), http.StatusUnauthorized)

	pool := db(t)
	rows := waitRows(t, pool, p.Schema(), unique, 60*time.Second)
	for id, n := range rows {
		if !unique[id] {
			t.Errorf("row for an event that was never sent: %s", id)
		}
		if n != 1 {
			t.Errorf("event %s has %d rows", id, n)
		}
	}
	if len(rows) != len(unique) {
		t.Fatalf("%d rows for %d unique events", len(rows), len(unique))
	}

	// Each row has the body its webhook was sent with, byte for byte, in its
	// own column, and not (base64) in the event document.
	bodies := map[string][]byte{}
	for _, w := range all {
		bodies[w.EventID] = w.Body
	}
	rs, err := pool.Query(context.Background(), `SELECT event_id, raw_payload, event ? 'raw_payload' FROM `+p.Schema()+`.feedback_events`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id string
		var raw []byte
		var inDoc bool
		if err := rs.Scan(&id, &raw, &inDoc); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, bodies[id]) || inDoc {
			t.Errorf("event %s: raw_payload of %d bytes (the webhook's body has %d, equal: %v), in the document too: %v",
				id, len(raw), len(bodies[id]), bytes.Equal(raw, bodies[id]), inDoc)
		}
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}

	// The tampered webhook is on no topic.
	for _, topic := range []string{p.TopicPrefix() + "feedback.raw.v1", p.TopicPrefix() + "feedback.normalized.v1"} {
		for _, m := range readTopic(t, p.Brokers, topic) {
			if strings.Contains(string(m.Key), forged.EventID) || strings.Contains(string(m.Value), forged.EventID) {
				t.Fatalf("the tampered webhook's event %s reached %s", forged.EventID, topic)
			}
		}
	}

	// The latest-version view holds one row per response, with its comment.
	var subjects, withComment int
	if err := pool.QueryRow(context.Background(),
		`SELECT count(*), count(comment) FROM `+p.Schema()+`.feedback_latest WHERE subject_type = 'response'`).Scan(&subjects, &withComment); err != nil {
		t.Fatal(err)
	}
	if subjects != 20 || withComment != 20 {
		t.Fatalf("latest view: %d responses, %d with a comment; want 20 and 20 (the updated version wins)", subjects, withComment)
	}

	// One trace runs from the ingress HTTP span to the sink's span.
	var traceID string
	if err := pool.QueryRow(context.Background(), `SELECT trace_id FROM `+p.Schema()+`.feedback_events WHERE event_id = $1`, all[0].EventID).Scan(&traceID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		svcs := spans.services(traceID)
		if hasSpan(svcs["ingress"], "POST /v1/hooks/{source}/{token}") && hasSpan(svcs["sink-warehouse"], "process "+p.TopicPrefix()+"feedback.enriched.v1") &&
			len(svcs["normalizer"]) > 0 && len(svcs["enricher"]) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s does not link ingress to sink; spans by service: %v", traceID, svcs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitConsuming waits until the service has handled a record since it
// started (its closedloop_consumer_records_total counter is above zero).
func waitConsuming(t *testing.T, p *stack.Pipeline, service string, timeout time.Duration) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^closedloop_consumer_records_total\{[^}]*\} ([0-9.e+]+)$`)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + p.OpsAddrs[service] + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				if n, _ := strconv.ParseFloat(m[1], 64); n > 0 {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s handled no record within %s", service, timeout)
}

func hasSpan(names []string, want string) bool {
	for _, n := range names {
		if n == want {
			return true
		}
	}
	return false
}

func TestKillingTheNormalizerMidStreamLosesNoEventAndDuplicatesNoRow(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	p := newPipeline(t, "e2e_kill", "CONSUMER_SESSION_TIMEOUT=6s")
	gen := delightedgen.New([]byte(p.Secret), 2)
	const responses = 150

	var mu sync.Mutex
	unique := map[string]bool{}
	var sent, dupes atomic.Int64
	var killsDone atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		rnd := rand.New(rand.NewPCG(7, 7))
		client := &http.Client{Timeout: 10 * time.Second}
		// Keep the stream flowing until both kills are done, and at least
		// `responses` responses long.
		for i := 0; i < responses || !killsDone.Load(); i++ {
			c, u := gen.Response()
			for _, w := range []delightedgen.Webhook{c, u} {
				copies := 1
				if rnd.IntN(5) == 0 { // 20 % duplicate deliveries
					copies = 2
				}
				for range copies {
					// The ingress stays up: every delivery must be accepted.
					code, err := delightedgen.Send(context.Background(), client, p.IngressURL, w)
					if err != nil || code != http.StatusAccepted {
						t.Errorf("POST %s: %d %v", w, code, err)
						return
					}
					sent.Add(1)
				}
				if copies == 2 {
					dupes.Add(1)
				}
				mu.Lock()
				unique[w.EventID] = true
				mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	// SIGKILL the normalizer twice while the stream is flowing, each time
	// once the previous instance is consuming and the group has settled.
	// (Killing a member between its JoinGroup and SyncGroup leaves kfake with
	// a member that never expires and keeps its partitions; Kafka expires it
	// after the session timeout. That is a defect of the dev broker, not a
	// case of ours.)
	norm := p.Services["normalizer"]
	for i := range 2 {
		waitConsuming(t, p, "normalizer", 60*time.Second)
		if i > 0 {
			// Let the group expire the member killed before (session timeout
			// 6s) and settle, so this kill does not land inside that rebalance.
			time.Sleep(8 * time.Second)
		}
		time.Sleep(time.Duration(50+rand.IntN(200)) * time.Millisecond)
		norm.Kill()
		t.Logf("normalizer killed (SIGKILL) #%d after %d deliveries", i+1, sent.Load())
		if err := p.Restart(context.Background(), "normalizer"); err != nil {
			t.Fatal(err)
		}
	}
	killsDone.Store(true)
	<-done
	if t.Failed() {
		return
	}
	mu.Lock()
	want := len(unique)
	mu.Unlock()

	pool := db(t)
	onMissing = func(ids []string) { locate(t, p, ids) }
	defer func() { onMissing = nil }()
	rows := waitRows(t, pool, p.Schema(), unique, 90*time.Second)
	for id, n := range rows {
		if n != 1 {
			t.Errorf("event %s has %d rows", id, n)
		}
	}
	if len(rows) != want {
		t.Fatalf("%d rows for %d unique events", len(rows), want)
	}
	normalized := readTopic(t, p.Brokers, p.TopicPrefix()+"feedback.normalized.v1")
	seen := map[string]int{}
	for _, m := range normalized {
		var ev feedbackv1.FeedbackEvent
		if err := proto.Unmarshal(m.Value, &ev); err != nil {
			t.Fatal(err)
		}
		seen[ev.EventId]++
	}
	repeats := len(normalized) - len(seen)
	t.Logf("sent %d deliveries (%d duplicated) of %d unique events; normalized topic: %d records, %d unique, %d repeats from the crash window; warehouse: %d rows",
		sent.Load(), dupes.Load(), want, len(normalized), len(seen), repeats, len(rows))
	if len(seen) != want {
		t.Fatalf("normalized topic has %d unique events, want %d (lost events)", len(seen), want)
	}
}

// Not parallel: it times the revocation (a second at most), so it runs
// before the parallel tests, without their load beside it.
func TestAnIssuedIngestTokenWorksAndARevokedOneStopsWithinASecond(t *testing.T) {
	requireInfra(t)
	p := newPipeline(t, "e2e_tokens")
	gen := delightedgen.New([]byte(p.Secret), 3)
	ctx := context.Background()
	topic := p.TopicPrefix() + "closedloop.control.ingest-tokens.v1"
	store := ingesttokens.NewStore([]string{p.Brokers}, topic, slog.New(slog.NewTextHandler(io.Discard, nil)))
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = store.Run(sctx) }()
	for !store.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	prod := kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: []string{p.Brokers}})
	defer prod.Close()
	url := strings.TrimSuffix(p.IngressURL, p.Token)

	tok, issued, err := store.Issue(ctx, prod, "delighted", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	took := untilStatus(t, url+tok, gen, http.StatusAccepted, time.Second)
	t.Logf("an issued token was accepted by the ingress after %s", took)
	if err := store.Revoke(ctx, prod, "delighted", issued.ID); err != nil {
		t.Fatal(err)
	}
	took = untilStatus(t, url+tok, gen, http.StatusNotFound, time.Second)
	t.Logf("a revoked token was refused by the ingress after %s", took)
	// The static token of the pipeline file still works.
	c, _ := gen.Response()
	send(t, p, c, http.StatusAccepted)
}

// untilStatus posts fresh webhooks to url until one gets want, failing after limit.
func untilStatus(t *testing.T, url string, gen *delightedgen.Generator, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		w, _ := gen.Response()
		code, err := delightedgen.Send(context.Background(), http.DefaultClient, url, w)
		if err == nil && code == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("still %d %v after %s, want %d", code, err, limit, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
