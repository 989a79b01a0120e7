package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/destinations/zendesk"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	freshdeskfake "github.com/closedloop/closedloop/tools/fakes/freshdesk"
	hubspotfake "github.com/closedloop/closedloop/tools/fakes/hubspot"
	salesforcefake "github.com/closedloop/closedloop/tools/fakes/salesforce"
	slackfake "github.com/closedloop/closedloop/tools/fakes/slack"
	zendeskfake "github.com/closedloop/closedloop/tools/fakes/zendesk"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// sinkUnderTest is one sink service with a destination the test controls.
type sinkUnderTest struct {
	service  string // "sink-warehouse"
	dest     string // its destination's name in the admin API
	p        *stack.Pipeline
	outcomes func(t *testing.T) map[string]int  // event id -> outcomes at the destination
	down     func(bool)                         // the destination fails (retryably) while down
	reject   func(ev *feedbackv1.FeedbackEvent) // makes the destination refuse ev for good
	resent   func() int                         // deliveries the destination saw again (0 where it cannot tell)
	// inFlight bounds resent after a kill (default 48: sink-webhook posts
	// 16 subjects of a batch at once, a batch per partition worker, 3).
	inFlight int
}

// The sink settings of the suite: a breaker that opens after three failed
// rounds and probes every second, short backoffs.
var sinksUnderTest = []struct {
	name string // service/destination
	mk   func(t *testing.T) *sinkUnderTest
}{{"sink-warehouse/warehouse", warehouseUnderTest}, {"sink-webhook/receiver", webhookUnderTest}, {"sink-webhook/cx-alerts", slackUnderTest}, {"sink-webhook/support", zendeskUnderTest}, {"sink-webhook/helpdesk", freshdeskUnderTest},
	{"sink-webhook/crm", hubspotUnderTest}, {"sink-webhook/org", salesforceUnderTest}}

var suiteEnv = []string{"SINK_BREAKER_THRESHOLD=3", "SINK_BREAKER_OPEN_FOR=1s", "SINK_BACKOFF_MAX=300ms", "LOG_LEVEL=warn",
	"CONSUMER_SESSION_TIMEOUT=6s"} // the killed member leaves the group sooner (the broker's minimum)

// TestSinkConformance runs the conformance suite every sink passes against
// sink-warehouse (real PostgreSQL behind a proxy that can cut it off) and
// sink-webhook (a local receiver that verifies signatures and fails on
// command), each its own process: every event delivered once; a retryable
// failure retried; a permanent one dead-lettered with its attempts; an
// outage opens the breaker (no dead letters) and delivery resumes by
// itself; Pause/Resume by hand through the admin API; a SIGKILL in the
// middle of a stream and a restart lose nothing and add no second outcome.
func TestSinkConformance(t *testing.T) {
	requireInfra(t)
	// Each sink has its own pipeline (topics, groups, destination): the
	// suites run side by side.
	for _, u := range sinksUnderTest {
		t.Run(u.name, func(t *testing.T) {
			t.Parallel()
			s := u.mk(t)
			if got := s.service + "/" + s.dest; got != u.name {
				t.Fatalf("the sink under test is %s, named %s", got, u.name)
			}
			runSinkSuite(t, s)
		})
	}
}

func runSinkSuite(t *testing.T, s *sinkUnderTest) {
	ctx := context.Background()
	p := s.p
	w := &kafka.Writer{Addr: kafka.TCP(strings.Split(p.Brokers, ",")...), Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond,
		Transport: &kafka.Transport{}} // its own metadata cache: the shared one may predate these topics
	defer w.Close()
	produce := func(topic string, evs ...*feedbackv1.FeedbackEvent) {
		t.Helper()
		msgs := make([]kafka.Message, len(evs))
		for i, ev := range evs {
			v, _ := proto.Marshal(ev)
			msgs[i] = kafka.Message{Topic: p.TopicPrefix() + topic, Key: []byte(ev.Source + "/" + ev.Subject.Id), Value: v}
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	admin := adminv1.NewServiceAdminServiceClient(serviceConn(t, p, s.service))
	destStatus := func() *adminv1.DestinationStatus {
		t.Helper()
		st, err := admin.GetStatus(ctx, &adminv1.GetStatusRequest{})
		if err != nil {
			t.Fatalf("GetStatus: %v", err)
		}
		for _, d := range st.Destinations {
			if d.Name == s.dest {
				return d
			}
		}
		t.Fatalf("GetStatus lists no destination %q: %v", s.dest, st.Destinations)
		return nil
	}
	dlqTopic := p.TopicPrefix() + "feedback.dlq." + s.service + ".v1"
	deadLetters := func() []*sinkv1.DeadLetter {
		var out []*sinkv1.DeadLetter
		for _, m := range readTopicIfAny(t, p.Brokers, dlqTopic) {
			var dl sinkv1.DeadLetter
			if err := proto.Unmarshal(m.Value, &dl); err != nil {
				t.Fatalf("dead letter at offset %d: %v", m.Offset, err)
			}
			out = append(out, &dl)
		}
		return out
	}
	want := map[string]bool{}
	waitAll := func(timeout time.Duration) map[string]int {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			got := s.outcomes(t)
			missing := 0
			for id := range want {
				if got[id] == 0 {
					missing++
				}
			}
			if missing == 0 {
				time.Sleep(time.Second) // late second outcomes would show
				return s.outcomes(t)
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s, %d of %d events have no outcome at the destination", timeout, missing, len(want))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	checkOnce := func(phase string, got map[string]int) {
		t.Helper()
		for id := range want {
			if got[id] != 1 {
				t.Errorf("%s: event %s has %d outcomes, want 1", phase, id, got[id])
			}
		}
	}
	next := 0
	batch := func(n int) []*feedbackv1.FeedbackEvent {
		out := make([]*feedbackv1.FeedbackEvent, n)
		for i := range out {
			next++
			out[i] = suiteEvent(next)
			want[out[i].EventId] = true
		}
		return out
	}

	// 1. Each event once, also when the topic carries it twice (at least
	// once upstream), priority lane and standard lane alike.
	evs := batch(300)
	produce("feedback.enriched.v1", evs[:250]...)
	produce("feedback.enriched.priority.v1", evs[250:]...)
	produce("feedback.enriched.v1", evs[:30]...) // repeats
	checkOnce("once", waitAll(60*time.Second))
	t.Logf("once: %d events (30 of them on the topic twice) have one outcome each", len(want))

	// 2. A retryable failure is retried.
	before := destStatus().FailedAttempts
	s.down(true)
	produce("feedback.enriched.v1", batch(20)...)
	time.Sleep(700 * time.Millisecond)
	s.down(false)
	checkOnce("retry", waitAll(60*time.Second))
	if after := destStatus().FailedAttempts; after <= before {
		t.Errorf("retry: failed attempts %d -> %d: the outage was never seen", before, after)
	}
	if dl := deadLetters(); len(dl) != 0 {
		t.Fatalf("retry: %d dead letters, want none", len(dl))
	}

	// 3. A permanent failure is dead-lettered with its attempts; the rest
	// is delivered.
	evs = batch(10)
	bad := evs[4]
	s.reject(bad)
	delete(want, bad.EventId)
	produce("feedback.enriched.v1", evs...)
	checkOnce("permanent", waitAll(60*time.Second))
	var dl []*sinkv1.DeadLetter
	for deadline := time.Now().Add(30 * time.Second); len(dl) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		dl = deadLetters()
	}
	if len(dl) != 1 || dl[0].EventId != bad.EventId || dl[0].ErrorClass != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT ||
		dl[0].Sink != s.service || len(dl[0].Attempts) == 0 || dl[0].Attempts[0].At == nil || len(dl[0].Event) == 0 {
		t.Fatalf("dead letters %v, want one permanent letter for %s with its attempts", dl, bad.EventId)
	}
	if got := s.outcomes(t)[bad.EventId]; got != 0 {
		t.Fatalf("the rejected event has %d outcomes", got)
	}
	t.Logf("permanent: %s dead-lettered (%s, %d attempt(s)): %s", bad.EventId, dl[0].ErrorClass, len(dl[0].Attempts), dl[0].Error)

	// 4. An outage opens the breaker: consumption pauses, nothing is
	// dead-lettered, and delivery resumes by itself.
	s.down(true)
	produce("feedback.enriched.v1", batch(50)...)
	opened := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if st := destStatus(); st.Breaker == adminv1.BreakerState_BREAKER_STATE_OPEN || st.Breaker == adminv1.BreakerState_BREAKER_STATE_HALF_OPEN {
			opened = true
			break
		}
	}
	if !opened {
		t.Fatalf("outage: the breaker never opened: %v", destStatus())
	}
	time.Sleep(2500 * time.Millisecond) // probes fail meanwhile
	s.down(false)
	checkOnce("outage", waitAll(60*time.Second))
	if n := len(deadLetters()); n != 1 {
		t.Fatalf("outage: %d dead letters, want still the one permanent", n)
	}
	if st := destStatus(); st.Breaker != adminv1.BreakerState_BREAKER_STATE_CLOSED || st.BreakerOpened == 0 {
		t.Fatalf("after the outage: %v, want closed after having opened", st)
	}

	// 5. Pause and Resume by hand through the admin API.
	if _, err := admin.PauseDestination(ctx, &adminv1.PauseDestinationRequest{Destination: s.dest, Reason: "e2e"}); err != nil {
		t.Fatal(err)
	}
	held := batch(5)
	produce("feedback.enriched.v1", held...)
	time.Sleep(1500 * time.Millisecond)
	got := s.outcomes(t)
	for _, ev := range held {
		if got[ev.EventId] != 0 {
			t.Fatalf("pause: %s delivered while paused", ev.EventId)
		}
	}
	if st := destStatus(); !st.Paused || st.PauseReason != "e2e" {
		t.Fatalf("paused status %v", st)
	}
	if _, err := admin.ResumeDestination(ctx, &adminv1.ResumeDestinationRequest{Destination: s.dest}); err != nil {
		t.Fatal(err)
	}
	checkOnce("resume", waitAll(60*time.Second))

	// 6. SIGKILL in the middle of a stream, then a restart.
	resentBefore := s.resent()
	stream := batch(3000)
	produce("feedback.enriched.v1", stream...)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := s.outcomes(t)
		n := 0
		for _, ev := range stream {
			if got[ev.EventId] > 0 {
				n++
			}
		}
		if n >= 300 {
			if n == len(stream) {
				t.Logf("kill: the whole stream was delivered before the kill; the kill tests a restart only")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kill: only %d of the stream delivered", n)
		}
	}
	proc := p.Services[s.service]
	proc.Kill()
	partial := 0
	for _, n := range s.outcomes(t) {
		partial += min(n, 1)
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.Restart(rctx, s.service); err != nil {
		t.Fatal(err)
	}
	checkOnce("kill", waitAll(90*time.Second))
	resent := s.resent() - resentBefore
	t.Logf("kill: SIGKILL when %d of the suite's %d events had their outcome; after the restart every event has exactly one; %d delivery(ies) reached the destination a second time (a webhook receiver deduplicates them on webhook-id)",
		partial, len(want), resent)
	// In flight at the kill: sink-webhook posts up to webhook.Parallel (16)
	// subjects of a batch at once, a batch per partition worker (3 here); a
	// CRM writes a whole batch in a few calls.
	inFlight := s.inFlight
	if inFlight == 0 {
		inFlight = 16 * 3
	}
	if resent > inFlight {
		t.Errorf("kill: %d deliveries sent again; at most the events in flight (%d) may be", resent, inFlight)
	}
	if n := len(deadLetters()); n != 1 {
		t.Fatalf("kill: %d dead letters, want still the one permanent", n)
	}

	// 7. Start-up while the destination is down (issue 10: sink-warehouse
	// killed while PostgreSQL was stopped did not listen for 18 s): the sink
	// serves health and status at once, reports not ready with the reason,
	// and delivers when the destination returns.
	s.down(true)
	proc.Kill()
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	var healthy time.Duration
	for deadline := time.Now().Add(15 * time.Second); healthy == 0; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + p.OpsAddrs[s.service] + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				healthy = time.Since(started)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("start-up while down: no /healthz within 15 s")
		}
	}
	down := batch(20)
	produce("feedback.enriched.v1", down...)
	var st *adminv1.GetStatusResponse
	for deadline := time.Now().Add(10 * time.Second); st == nil; time.Sleep(100 * time.Millisecond) {
		if r, err := admin.GetStatus(ctx, &adminv1.GetStatusRequest{}); err == nil {
			st = r
		} else if time.Now().After(deadline) {
			t.Fatalf("start-up while down: GetStatus: %v", err)
		}
	}
	reason := ""
	for _, c := range st.Components {
		if !c.Healthy {
			reason += c.Name + ": " + c.Detail + "; "
		}
	}
	if s.service == "sink-warehouse" && (st.Ready || !strings.Contains(reason, "destination warehouse")) {
		t.Fatalf("start-up while down: ready %v, unhealthy components %q; want not ready because of the destination", st.Ready, reason)
	}
	s.down(false)
	checkOnce("start-up while down", waitAll(90*time.Second))
	t.Logf("start-up while down: /healthz after %s, not ready meanwhile (%s); every event once after the destination returned", healthy.Round(time.Millisecond), strings.TrimSuffix(reason, "; "))
}

// suiteEvent is the i-th event of the suite: a detractor response.
func suiteEvent(i int) *feedbackv1.FeedbackEvent {
	comment := "it broke, twice"
	now := time.Now()
	return &feedbackv1.FeedbackEvent{
		EventId: fmt.Sprintf("sink-ev-%05d", i), Source: "delighted", Provider: "delighted",
		Kind:    feedbackv1.Kind_KIND_RESPONSE_CREATED,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: "r" + strconv.Itoa(i)},
		Version: timestamppb.New(now), OccurredAt: timestamppb.New(now), ReceivedAt: timestamppb.New(now), NormalizedAt: timestamppb.New(now),
		Survey: &feedbackv1.Survey{Type: feedbackv1.SurveyType_SURVEY_TYPE_NPS},
		Score:  &feedbackv1.Score{Value: 3, Min: 0, Max: 10}, Segment: feedbackv1.Segment_SEGMENT_DETRACTOR,
		Comment: &comment, Respondent: &feedbackv1.Respondent{Email: fmt.Sprintf("p%d@example.com", i)},
	}
}

func warehouseUnderTest(t *testing.T) *sinkUnderTest {
	proxy := newTCPProxy(t, infra.pg.Addr)
	p := &stack.Pipeline{
		Name: "sinkwh", BinDir: infra.binDir, Dir: infra.dir + "/sinkwh", Brokers: infra.broker.Addrs, Redis: infra.redis.Addr,
		DatabaseURL: proxyURL(proxy),
		Run:         []string{"sink-warehouse"}, Env: suiteEnv,
	}
	startPipeline(t, p)
	pool := db(t)
	return &sinkUnderTest{
		service: "sink-warehouse", dest: "warehouse", p: p,
		outcomes: func(t *testing.T) map[string]int { return rowsByEventID(t, pool, p.Schema()) },
		down:     proxy.SetDown,
		reject: func(ev *feedbackv1.FeedbackEvent) {
			c := "nul \x00 byte" // PostgreSQL text cannot hold NUL: the row is refused for good
			ev.Comment = &c
		},
		resent: func() int { return 0 },
	}
}

func webhookUnderTest(t *testing.T) *sinkUnderTest {
	rcv := newWebhookReceiver(t, "whsec_"+base64.StdEncoding.EncodeToString([]byte("e2e-webhook-signing-key-32-bytes")))
	p := &stack.Pipeline{
		Name: "sinkhook", BinDir: infra.binDir, Dir: infra.dir + "/sinkhook", Brokers: infra.broker.Addrs, Redis: infra.redis.Addr,
		Run: []string{"sink-webhook"},
		SinksYAML: "  webhook:\n    endpoints:\n      - name: receiver\n        url: " + rcv.URL + "\n" +
			"        secret: env:E2E_WEBHOOK_SECRET\n        timeout: 2s\n",
		Env: append([]string{"E2E_WEBHOOK_SECRET=" + rcv.secret}, suiteEnv...),
	}
	startPipeline(t, p)
	return &sinkUnderTest{
		service: "sink-webhook", dest: "receiver", p: p,
		outcomes: func(*testing.T) map[string]int { return rcv.outcomes() },
		down:     rcv.down.Store,
		reject:   func(ev *feedbackv1.FeedbackEvent) { rcv.refuse(ev.EventId) },
		resent:   func() int { return int(rcv.resent.Load()) },
	}
}

// slackUnderTest is a Slack channel of sink-webhook against the local Slack
// (tools/fakes/slack), with limits high enough for the suite's volume and no
// digests (the suite counts each event's own message). Slack has no
// idempotency key: a message sent again after a kill shows twice, so
// outcomes count distinct events and resent the repeats.
func slackUnderTest(t *testing.T) *sinkUnderTest {
	fake := slackfake.New()
	fake.Rate, fake.Burst = 100000, 100000
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	hook := srv.URL + fake.AddWebhook("C0E2E")
	p := &stack.Pipeline{
		Name: "sinkslack", BinDir: infra.binDir, Dir: infra.dir + "/sinkslack", Brokers: infra.broker.Addrs, Redis: infra.redis.Addr,
		Run: []string{"sink-webhook"},
		SinksYAML: "  slack:\n    channels:\n      - name: cx-alerts\n        webhook_url: env:E2E_SLACK_HOOK\n        when: 'true'\n" +
			"        rate_per_second: 100000\n        burst: 100000\n        digest_after: 100000\n        timeout: 2s\n",
		Env: append([]string{"E2E_SLACK_HOOK=" + hook}, suiteEnv...),
	}
	startPipeline(t, p)
	counts := func() map[string]int {
		out := map[string]int{}
		for _, post := range fake.Posts() {
			for _, part := range strings.Split(post.Text+string(post.Blocks), "sink-ev-")[1:] {
				if len(part) >= 5 {
					out["sink-ev-"+part[:5]]++
				}
			}
		}
		return out
	}
	return &sinkUnderTest{
		service: "sink-webhook", dest: "cx-alerts", p: p,
		outcomes: func(*testing.T) map[string]int {
			out := counts()
			for id := range out {
				out[id] = 1 // a repeated message is one event's outcome shown twice: counted in resent
			}
			return out
		},
		down: func(down bool) {
			if down {
				fake.Fail(slackfake.Failure{Channel: "C0E2E", Status: http.StatusInternalServerError, Error: "rollup_error", N: 1 << 30})
			} else {
				fake.ClearFailures()
			}
		},
		reject: func(ev *feedbackv1.FeedbackEvent) {
			fake.Fail(slackfake.Failure{Match: ev.EventId, Status: http.StatusBadRequest, Error: "invalid_payload", N: 1 << 30})
		},
		resent: func() int {
			n := 0
			for _, c := range counts() {
				n += c - 1
			}
			return n
		},
	}
}

// zendeskUnderTest is sink-webhook's Zendesk destination against the local
// Zendesk: an event's outcome is the ticket that holds it (its marker tag);
// a second ticket for one response would count twice.
func zendeskUnderTest(t *testing.T) *sinkUnderTest {
	fake := zendeskfake.New()
	fake.PerMinute = 1 << 30
	fake.AddAPIToken("agent@example.com", "zd-e2e-token-0123456789")
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	p := &stack.Pipeline{
		Name: "sinkzd", BinDir: infra.binDir, Dir: infra.dir + "/sinkzd", Brokers: infra.broker.Addrs, Redis: infra.redis.Addr,
		Run: []string{"sink-webhook"},
		SinksYAML: "  zendesk:\n    accounts:\n      - name: support\n        url: " + srv.URL + "\n        email: agent@example.com\n" +
			"        api_token: env:E2E_ZENDESK_TOKEN\n        when: 'true'\n        requests_per_minute: 1000000\n        timeout: 2s\n",
		Env: append([]string{"E2E_ZENDESK_TOKEN=zd-e2e-token-0123456789"}, suiteEnv...),
	}
	startPipeline(t, p)
	return &sinkUnderTest{
		service: "sink-webhook", dest: "support", p: p,
		outcomes: func(*testing.T) map[string]int {
			byMarker := map[string]int{}
			events := map[string]string{} // marker -> event id
			for _, tk := range fake.Tickets() {
				for _, tag := range tk.Tags {
					byMarker[tag]++
				}
				for _, c := range tk.Comments {
					if i := strings.Index(c.Body, "closedloop event "); i >= 0 {
						id := strings.Fields(c.Body[i+len("closedloop event "):])[0]
						events[zendesk.Marker(id)] = id
					}
				}
			}
			out := map[string]int{}
			for marker, id := range events {
				out[id] = byMarker[marker]
			}
			return out
		},
		down: func(down bool) {
			if down {
				fake.Fail(zendeskfake.Failure{Status: http.StatusServiceUnavailable, N: 1 << 30})
			} else {
				fake.ClearFailures()
			}
		},
		reject: func(ev *feedbackv1.FeedbackEvent) {
			fake.Fail(zendeskfake.Failure{Match: ev.EventId, Status: http.StatusUnprocessableEntity, N: 1 << 30})
		},
		resent: func() int { return 0 }, // a second ticket would show as a second outcome
	}
}

// freshdeskUnderTest is sink-webhook's Freshdesk destination against the
// local Freshdesk (no idempotency key: the response field finds the ticket).
func freshdeskUnderTest(t *testing.T) *sinkUnderTest {
	fake := freshdeskfake.New()
	fake.PerMinute = 1 << 30
	fake.AddAPIKey("fd-e2e-key-0123456789")
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	p := &stack.Pipeline{
		Name: "sinkfd", BinDir: infra.binDir, Dir: infra.dir + "/sinkfd", Brokers: infra.broker.Addrs, Redis: infra.redis.Addr,
		Run: []string{"sink-webhook"},
		SinksYAML: "  freshdesk:\n    accounts:\n      - name: helpdesk\n        url: " + srv.URL + "\n" +
			"        api_key: env:E2E_FRESHDESK_KEY\n        when: 'true'\n        requests_per_minute: 1000000\n        timeout: 2s\n",
		Env: append([]string{"E2E_FRESHDESK_KEY=fd-e2e-key-0123456789"}, suiteEnv...),
	}
	startPipeline(t, p)
	return &sinkUnderTest{
		service: "sink-webhook", dest: "helpdesk", p: p,
		outcomes: func(*testing.T) map[string]int {
			byMarker := map[string]int{}
			tickets := fake.Tickets()
			for _, tk := range tickets {
				for _, tag := range tk.Tags {
					byMarker[tag]++
				}
			}
			out := map[string]int{}
			for _, tk := range tickets {
				if i := strings.Index(tk.Description, "closedloop event "); i >= 0 {
					id := strings.Fields(tk.Description[i+len("closedloop event "):])[0]
					out[id] = byMarker[zendesk.Marker(id)]
				}
			}
			return out
		},
		down: func(down bool) {
			if down {
				fake.Fail(freshdeskfake.Failure{Status: http.StatusServiceUnavailable, N: 1 << 30})
			} else {
				fake.ClearFailures()
			}
		},
		reject: func(ev *feedbackv1.FeedbackEvent) {
			fake.Fail(freshdeskfake.Failure{Match: ev.EventId, Status: http.StatusBadRequest, N: 1 << 30})
		},
		resent: func() int { return 0 },
	}
}

// hubspotUnderTest is sink-webhook's HubSpot destination against the local
// HubSpot. An event's outcome is its contact holding its values (each suite
// event is its own person): a write of the same values again after a kill
// is the same outcome, counted in resent.
func hubspotUnderTest(t *testing.T) *sinkUnderTest {
	fake := hubspotfake.New()
	fake.PerTenSeconds = 1 << 30
	fake.AddToken("pat-e2e-token")
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	p := &stack.Pipeline{
		Name: "sinkhs", BinDir: infra.binDir, Dir: infra.dir + "/sinkhs", Brokers: infra.broker.Addrs, Redis: infra.redis.Addr,
		Run: []string{"sink-webhook"},
		SinksYAML: "  hubspot:\n    accounts:\n      - name: crm\n        url: " + srv.URL + "\n        token: env:E2E_HUBSPOT_TOKEN\n" +
			"        requests_per_10s: 1000000\n        timeout: 2s\n        unsubscribe:\n          subscription: Marketing Information\n",
		Env: append([]string{"E2E_HUBSPOT_TOKEN=pat-e2e-token"}, suiteEnv...),
	}
	startPipeline(t, p)
	return &sinkUnderTest{
		service: "sink-webhook", dest: "crm", p: p,
		outcomes: func(*testing.T) map[string]int {
			out := map[string]int{}
			for _, c := range fake.Contacts() {
				if id := c.Properties["closedloop_event_id"]; id != "" {
					out[id]++
				}
			}
			return out
		},
		down: func(down bool) {
			if down {
				fake.Fail(hubspotfake.Failure{Status: http.StatusBadGateway, N: 1 << 30})
			} else {
				fake.ClearFailures()
			}
		},
		reject: func(ev *feedbackv1.FeedbackEvent) {
			fake.Fail(hubspotfake.Failure{Match: ev.EventId, Status: http.StatusBadRequest, N: 1 << 30})
		},
		resent: func() int { return len(fake.Writes()) - fake.Stats().Contacts },
		// A batch (SINK_MAX_BATCH, 500) per partition worker is written in
		// calls of 100: rewritten with the same values after a kill.
		inFlight: 3 * 500,
	}
}

// salesforceUnderTest is sink-webhook's Salesforce destination against the
// local org, whose Contacts exist beforehand (Salesforce is not upserted
// by email).
func salesforceUnderTest(t *testing.T) *sinkUnderTest {
	fake := salesforcefake.New("e2e-client", "e2e-secret")
	for i := 1; i <= 3500; i++ {
		fake.Add("Contact", salesforcefake.Record{"Email": fmt.Sprintf("p%d@example.com", i), "LastName": "P"})
	}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	p := &stack.Pipeline{
		Name: "sinksf", BinDir: infra.binDir, Dir: infra.dir + "/sinksf", Brokers: infra.broker.Addrs, Redis: infra.redis.Addr,
		Run: []string{"sink-webhook"},
		SinksYAML: "  salesforce:\n    accounts:\n      - name: org\n        url: " + srv.URL + "\n        requests_per_minute: 1000000\n        timeout: 2s\n" +
			"        auth:\n          flow: client_credentials\n          client_id: e2e-client\n          client_secret: env:E2E_SF_SECRET\n",
		Env: append([]string{"E2E_SF_SECRET=e2e-secret"}, suiteEnv...),
	}
	startPipeline(t, p)
	return &sinkUnderTest{
		service: "sink-webhook", dest: "org", p: p,
		outcomes: func(*testing.T) map[string]int {
			out := map[string]int{}
			for _, c := range fake.Records("Contact") {
				if id, ok := c["Closedloop_Event_Id__c"].(string); ok {
					out[id]++
				}
			}
			return out
		},
		down: func(down bool) {
			if down {
				fake.Fail(salesforcefake.Failure{Status: http.StatusServiceUnavailable, N: 1 << 30})
			} else {
				fake.ClearFailures()
			}
		},
		reject: func(ev *feedbackv1.FeedbackEvent) {
			// A validation rule refuses the record: the link is only in the update.
			ev.Permalink = "https://app.delighted.com/r/" + ev.EventId
			fake.Fail(salesforcefake.Failure{Match: ev.Permalink, Status: http.StatusBadRequest, N: 1 << 30})
		},
		resent: func() int {
			n := 0
			for _, w := range fake.Writes() {
				if w["type"] == "Contact" {
					n++
				}
			}
			return n - len(fake.Records("Task")) // one contact write per task'd event; more are rewrites
		},
		inFlight: 3 * 500, // a batch per partition worker, written in calls of 200
	}
}

// webhookReceiver is an endpoint that verifies Standard Webhooks
// signatures, answers 2xx (or 503 while down, 422 for refused ids) and,
// as the specification asks of receivers, counts an event once per
// webhook-id however often it arrives.
type webhookReceiver struct {
	URL     string
	secret  string
	key     []byte
	down    atomic.Bool
	resent  atomic.Int64
	mu      sync.Mutex
	got     map[string]int
	refused map[string]bool
}

func newWebhookReceiver(t *testing.T, secret string) *webhookReceiver {
	t.Helper()
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	r := &webhookReceiver{secret: secret, key: key, got: map[string]int{}, refused: map[string]bool{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.URL = "http://" + lis.Addr().String() + "/hook"
	return r
}

func (r *webhookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
	m := hmac.New(sha256.New, r.key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	if req.Header.Get("webhook-signature") != "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)) {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if r.down.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refused[id] {
		http.Error(w, "unprocessable", http.StatusUnprocessableEntity)
		return
	}
	if r.got[id] > 0 {
		r.resent.Add(1)
	} else {
		r.got[id] = 1
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *webhookReceiver) refuse(id string) { r.mu.Lock(); r.refused[id] = true; r.mu.Unlock() }

func (r *webhookReceiver) outcomes() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.got))
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

// tcpProxy forwards to a server and can cut it off: while down, open
// connections are closed and new ones refused — to the client the server
// is unreachable.
type tcpProxy struct {
	lis    net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{lis: lis, target: target, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { _ = lis.Close(); p.SetDown(true) })
	return p
}

func (p *tcpProxy) Addr() string { return p.lis.Addr().String() }

// SetDown cuts the server off (true) or restores it.
func (p *tcpProxy) SetDown(down bool) {
	p.down.Store(down)
	if !down {
		return
	}
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

func (p *tcpProxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		go p.forward(c)
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[s] = true, true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		delete(p.conns, s)
		p.mu.Unlock()
		_ = c.Close()
		_ = s.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(s, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, s); done <- struct{}{} }()
	<-done
}
