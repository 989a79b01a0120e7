package enrich

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/services/enricher/internal/lookup"
)

// crm is a CRM-like server: accounts by domain; it counts requests per
// domain and can be made to fail, hang or rate-limit.
type crm struct {
	mu       sync.Mutex
	requests map[string]int
	mode     atomic.Value // "", "down", "hang", "429once"
	auth     string
	srv      *httptest.Server
}

func newCRM(t *testing.T) *crm {
	c := &crm{requests: map[string]int{}}
	c.mode.Store("")
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		domain := strings.TrimPrefix(r.URL.Path, "/v1/accounts/")
		c.mu.Lock()
		c.requests[domain]++
		n := c.requests[domain]
		c.auth = r.Header.Get("Authorization")
		c.mu.Unlock()
		switch c.mode.Load().(string) {
		case "down":
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		case "hang":
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
			return
		case "429once":
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "slow down", http.StatusTooManyRequests)
				return
			}
		}
		accounts := map[string]string{"example.com": "enterprise", "example.fr": "growth"}
		tier, ok := accounts[domain]
		if !ok {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"account": map[string]any{"tier": tier, "arr": 120000, "owner": map[string]any{"email": "owner@x"}}})
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *crm) count(domain string) int { c.mu.Lock(); defer c.mu.Unlock(); return c.requests[domain] }

type recorder struct {
	mu   sync.Mutex
	recs []kafkaio.Record
	fail func(kafkaio.Record) error
}

func (r *recorder) ProduceEach(_ context.Context, recs ...kafkaio.Record) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for i, rec := range recs {
		if r.fail != nil {
			if err := r.fail(rec); err != nil {
				if errs == nil {
					errs = make([]error, len(recs))
				}
				errs[i] = err
				continue
			}
		}
		r.recs = append(r.recs, rec)
	}
	return errs
}

func (r *recorder) events(t *testing.T) map[string]*feedbackv1.FeedbackEvent {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*feedbackv1.FeedbackEvent{}
	for _, rec := range r.recs {
		var ev feedbackv1.FeedbackEvent
		if err := proto.Unmarshal(rec.Value, &ev); err != nil {
			t.Fatal(err)
		}
		out[ev.EventId+"@"+rec.Topic] = &ev
	}
	return out
}

const pipelineYAML = `
enrichment:
  lookups:
    - name: account
      key: 'event.respondent.email.contains("@") ? event.respondent.email.split("@")[1] : ""'
      url: URL/v1/accounts/{key}
      secret_headers: {Authorization: "Bearer env:CRM_TOKEN"}
      fields: {tier: account.tier, arr: account.arr, owner_email: account.owner.email}
      max_delay: 300ms
      timeout: 200ms
      attempts: 2
      breaker_threshold: 2
      breaker_open_for: 1m
  rules:
    - name: escalate
      when: 'event.segment == Segment.SEGMENT_DETRACTOR && has(enrichment.tier) && enrichment.tier == "enterprise"'
      labels: [escalate]
      lane: priority
    - name: nurture
      when: 'event.segment == Segment.SEGMENT_PASSIVE'
      labels: [nurture]
    - name: big_account
      when: 'enrichment.arr > 100000'
      labels: [big_account]
`

func handler(t *testing.T, c *crm, mod func(string) string) (*Handler, *recorder, *lookup.Lookup) {
	t.Helper()
	yml := strings.ReplaceAll(pipelineYAML, "URL", c.srv.URL)
	if mod != nil {
		yml = mod(yml)
	}
	p, err := config.ParsePipeline([]byte(yml), nil)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := lookup.New(p.Enrichment.Lookups[0], lookup.Options{RDB: rdb, Prefix: "t:enrich:", Log: log,
		LookupEnv: func(k string) (string, bool) { return map[string]string{"CRM_TOKEN": "tok"}[k], k == "CRM_TOKEN" }})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	return New(Options{Producer: rec, StandardTopic: "std", PriorityTopic: "prio", Lookups: []*lookup.Lookup{l},
		Rules: p.Enrichment.RoutingRules(), Log: log}), rec, l
}

func ev(id, email string, seg feedbackv1.Segment) kafkaio.Delivery {
	e := &feedbackv1.FeedbackEvent{EventId: id, Source: "delighted", Segment: seg,
		Subject:    &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r-" + id},
		Respondent: &feedbackv1.Respondent{Email: email}}
	b, _ := proto.Marshal(e)
	return kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Key: []byte("delighted/" + id), Value: b}}
}

const (
	detractor = feedbackv1.Segment_SEGMENT_DETRACTOR
	passive   = feedbackv1.Segment_SEGMENT_PASSIVE
	promoter  = feedbackv1.Segment_SEGMENT_PROMOTER
)

func TestLookupsAreCachedPositiveAndNegativeAndRoutedByTheRules(t *testing.T) {
	c := newCRM(t)
	h, rec, _ := handler(t, c, nil)
	batch := []kafkaio.Delivery{
		ev("a", "ann@example.com", detractor), ev("b", "bob@example.com", promoter), ev("c", "cy@example.com", passive),
		ev("d", "dee@example.jp", detractor), ev("e", "eve@example.jp", passive), ev("f", "", detractor),
	}
	if errs := h.HandleBatch(context.Background(), batch); errs != nil {
		t.Fatal(errs)
	}
	if c.count("example.com") != 1 || c.count("example.jp") != 1 || c.auth != "Bearer tok" {
		t.Fatalf("requests %v (auth %q), want one per distinct domain with the secret header", c.requests, c.auth)
	}
	got := rec.events(t)
	a := got["a@prio"]
	if a == nil {
		t.Fatalf("the enterprise detractor is not on the priority lane: %v", keys(got))
	}
	acct := a.Enrichment.Lookups["account"]
	if acct.Status != feedbackv1.LookupStatus_LOOKUP_STATUS_FOUND || acct.Cached || acct.Fields["tier"].GetStringValue() != "enterprise" ||
		acct.Fields["arr"].GetNumberValue() != 120000 || acct.Fields["owner_email"].GetStringValue() != "owner@x" {
		t.Fatalf("lookup result %v", acct)
	}
	if strings.Join(a.Enrichment.MatchedRules, ",") != "detractors,escalate,big_account" || strings.Join(a.Enrichment.Labels, ",") != "escalate,big_account" ||
		a.Enrichment.Lane != feedbackv1.Lane_LANE_PRIORITY || a.Enrichment.EnrichedAt == nil {
		t.Fatalf("routing of a: %v", a.Enrichment)
	}
	if b := got["b@std"]; b == nil || len(b.Enrichment.MatchedRules) != 1 || b.Enrichment.MatchedRules[0] != "big_account" {
		t.Fatalf("promoter b: %v", got["b@std"])
	}
	if c := got["c@std"]; c == nil || strings.Join(c.Enrichment.Labels, ",") != "nurture,big_account" {
		t.Fatalf("passive c: %v", got["c@std"])
	}
	// example.jp is unknown: not found; the default rule still sends the detractor to priority.
	d := got["d@prio"]
	if d == nil || d.Enrichment.Lookups["account"].Status != feedbackv1.LookupStatus_LOOKUP_STATUS_NOT_FOUND {
		t.Fatalf("unknown domain: %v", got["d@prio"])
	}
	if len(d.Enrichment.RuleErrors) != 1 || !strings.HasPrefix(d.Enrichment.RuleErrors[0], "big_account: ") {
		t.Fatalf("a rule reading a field the lookup did not return must be a rule error: %v", d.Enrichment.RuleErrors)
	}
	if f := got["f@prio"]; f == nil || f.Enrichment.Lookups["account"].Status != feedbackv1.LookupStatus_LOOKUP_STATUS_NO_KEY {
		t.Fatalf("no email: %v", got["f@prio"])
	}

	// The same keys again: answered from Redis, positive and negative.
	rec.recs = nil
	if errs := h.HandleBatch(context.Background(), []kafkaio.Delivery{ev("g", "gil@example.com", detractor), ev("h", "hal@example.jp", passive)}); errs != nil {
		t.Fatal(errs)
	}
	if c.count("example.com") != 1 || c.count("example.jp") != 1 {
		t.Fatalf("requests %v after cached answers", c.requests)
	}
	got = rec.events(t)
	if g := got["g@prio"].GetEnrichment().GetLookups()["account"]; !g.GetCached() || g.GetFields()["tier"].GetStringValue() != "enterprise" {
		t.Fatalf("cache hit: %v", g)
	}
	if hh := got["h@std"].GetEnrichment().GetLookups()["account"]; !hh.GetCached() || hh.GetStatus() != feedbackv1.LookupStatus_LOOKUP_STATUS_NOT_FOUND {
		t.Fatalf("negative cache hit: %v", hh)
	}
}

func TestManyMissesOnOneKeyMakeOneRequest(t *testing.T) {
	c := newCRM(t)
	_, _, l := handler(t, c, nil)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); l.Resolve(context.Background(), []string{"example.fr"}) }()
	}
	wg.Wait()
	if n := c.count("example.fr"); n != 1 {
		t.Fatalf("%d requests for one key asked 20 times at once", n)
	}
}

func TestWhenTheCRMIsDownEventsGoOnNotEnrichedAndTheBreakerOpens(t *testing.T) {
	c := newCRM(t)
	c.mode.Store("hang")
	h, rec, l := handler(t, c, nil)
	start := time.Now()
	if errs := h.HandleBatch(context.Background(), []kafkaio.Delivery{ev("a", "ann@example.com", detractor), ev("b", "bob@example.fr", passive)}); errs != nil {
		t.Fatal(errs)
	}
	took := time.Since(start)
	got := rec.events(t)
	a, b := got["a@prio"], got["b@std"]
	if a == nil || b == nil {
		t.Fatalf("events not passed on: %v", keys(got))
	}
	for _, e := range []*feedbackv1.FeedbackEvent{a, b} {
		r := e.Enrichment.Lookups["account"]
		if r.Status != feedbackv1.LookupStatus_LOOKUP_STATUS_FAILED || r.Error == "" {
			t.Fatalf("%s: %v, want not enriched with the reason", e.EventId, r)
		}
	}
	// Bounded: max_delay is 300ms; a hanging service must not hold the
	// partition anywhere near its 30 s.
	if took > 10*time.Second {
		t.Fatalf("the batch waited %s for a hanging service", took)
	}
	t.Logf("a hanging CRM added %s to the batch (max_delay 300ms): %s", took.Round(time.Millisecond), a.Enrichment.Lookups["account"].Error)

	// Consecutive failures open the breaker; then events go on at once.
	c.mode.Store("down")
	for i := 0; l.Breaker().State() == 0 && i < 10; i++ {
		h.HandleBatch(context.Background(), []kafkaio.Delivery{ev("x", "x@example.es", passive)})
	}
	if l.Breaker().State() == 0 {
		t.Fatal("the breaker never opened")
	}
	before := c.count("example.de")
	rec.recs = nil
	h.HandleBatch(context.Background(), []kafkaio.Delivery{ev("y", "y@example.de", passive)})
	y := rec.events(t)["y@std"]
	if y == nil || !strings.Contains(y.Enrichment.Lookups["account"].Error, "circuit breaker open") || c.count("example.de") != before {
		t.Fatalf("with the breaker open: %v, %d requests", y.GetEnrichment(), c.count("example.de")-before)
	}
}

func TestA429IsRetriedAfterItsRetryAfter(t *testing.T) {
	c := newCRM(t)
	c.mode.Store("429once")
	h, rec, _ := handler(t, c, func(y string) string {
		return strings.NewReplacer("max_delay: 300ms", "max_delay: 5s").Replace(y)
	})
	if errs := h.HandleBatch(context.Background(), []kafkaio.Delivery{ev("a", "ann@example.com", detractor)}); errs != nil {
		t.Fatal(errs)
	}
	r := rec.events(t)["a@prio"].GetEnrichment().GetLookups()["account"]
	if r.GetStatus() != feedbackv1.LookupStatus_LOOKUP_STATUS_FOUND || c.count("example.com") != 2 {
		t.Fatalf("after a 429: %v with %d requests", r, c.count("example.com"))
	}
}

func TestOnlyProducedEventsAreDoneAndUnusableOnesQuarantined(t *testing.T) {
	c := newCRM(t)
	h, rec, _ := handler(t, c, nil)
	rec.fail = func(r kafkaio.Record) error {
		if strings.HasSuffix(string(r.Key), "/b") {
			return errors.New("broker unavailable")
		}
		return nil
	}
	bad := kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Value: []byte("not protobuf")}}
	errs := h.HandleBatch(context.Background(), []kafkaio.Delivery{ev("a", "ann@example.com", promoter), ev("b", "bob@example.com", promoter), bad})
	if errs == nil || errs[0] != nil || errs[1] == nil {
		t.Fatalf("results %v: the unproduced event must not be done", errs)
	}
	if _, perm := kafkaio.IsPermanent(errs[1]); perm {
		t.Fatal("a produce failure must be retried, not quarantined")
	}
	if reason, perm := kafkaio.IsPermanent(errs[2]); !perm || reason != "undecodable_record" {
		t.Fatalf("undecodable record: %v", errs[2])
	}
}

func keys(m map[string]*feedbackv1.FeedbackEvent) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Finding 1 of the hardening review, at the enricher: an enriched event that
// does not fit in its lane's topic is quarantined (its normalized record
// fit on the topic before), never retried forever, and the others are done.
func TestAnEnrichedEventTooLargeForItsLaneIsQuarantinedNotRetried(t *testing.T) {
	c := newCRM(t)
	h, rec, _ := handler(t, c, nil)
	rec.fail = func(r kafkaio.Record) error {
		if strings.HasSuffix(string(r.Key), "/b") {
			return kafkaio.Permanent(kafkaio.ReasonRecordTooLarge, &kafkaio.RecordTooLargeError{Topic: r.Topic, Size: 2 << 20, Limit: 1 << 20})
		}
		return nil
	}
	errs := h.HandleBatch(context.Background(), []kafkaio.Delivery{ev("a", "ann@example.com", promoter), ev("b", "bob@example.com", promoter), ev("c", "cy@example.com", promoter)})
	if errs == nil || errs[0] != nil || errs[2] != nil {
		t.Fatalf("results %v: the events that fit must be done", errs)
	}
	if reason, perm := kafkaio.IsPermanent(errs[1]); !perm || reason != kafkaio.ReasonRecordTooLarge {
		t.Fatalf("the event too large: %v, want Permanent(%s)", errs[1], kafkaio.ReasonRecordTooLarge)
	}
}
