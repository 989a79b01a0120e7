package slackfake_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/destinations/slack"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	slackfake "github.com/closedloop/closedloop/tools/fakes/slack"
)

// serve starts a local Slack for the test.
func serve(t *testing.T) (*slackfake.Server, string) {
	t.Helper()
	fake := slackfake.New()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv.URL
}

// webhookChannel is a destination posting to a new incoming webhook of the
// fake's channel ch.
func webhookChannel(t *testing.T, fake *slackfake.Server, url, ch string) sink.Instance {
	t.Helper()
	return channel(t, "channels:\n  - name: cx\n    webhook_url: env:HOOK\n", map[string]string{"HOOK": url + fake.AddWebhook(ch)})
}

// tokenChannel is a destination posting with chat.postMessage and token to
// the fake's channel ch.
func tokenChannel(t *testing.T, url, ch, token string) sink.Instance {
	t.Helper()
	return channel(t, "channels:\n  - name: cx\n    token: env:TOKEN\n    channel: "+ch+"\n    api: "+url+"/api\n", map[string]string{"TOKEN": token})
}

// channel builds the Slack destinations of a `sinks.slack` section through
// the kind's own decoding (as the service does).
func channel(t *testing.T, section string, env map[string]string) sink.Instance {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(section), &n); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	ins, err := slack.Kind.Instances(n.Content[0], sink.KindEnv{Redis: rdb, RedisPrefix: "t:" + t.Name() + ":", GroupPrefix: "g-",
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return ins[0]
}

func open(t *testing.T, in sink.Instance) sink.Destination {
	t.Helper()
	d, err := in.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mentions(fake *slackfake.Server) map[string]int {
	out := map[string]int{}
	for _, p := range fake.Posts() {
		for _, part := range strings.Split(string(p.Blocks), "/r/")[1:] {
			if i := strings.IndexByte(part, '|'); i > 0 {
				out[part[:i]]++
			}
		}
	}
	return out
}

func TestTheSlackDestinationPassesTheContract(t *testing.T) {
	fake, url := serve(t)
	fake.Rate, fake.Burst = 1000, 1000
	hook := url + fake.AddWebhook("C0CONTRACT")
	in := channel(t, `
channels:
  - name: cx
    webhook_url: env:HOOK
    when: 'true'
    rate_per_second: 1000
    burst: 1000
    digest_after: 100
`, map[string]string{"HOOK": hook})
	d := open(t, in)
	sinktest.Run(t, sinktest.Harness{
		New:        func(*testing.T) sink.Destination { return d },
		Checkpoint: func(*testing.T) sink.Checkpoint { return in.Checkpoint },
		Outcomes:   func(*testing.T) map[string]int { return mentions(fake) },
		Fail: func(_ *testing.T, id string, f sinktest.Failure, n int) {
			fl := slackfake.Failure{Match: "/r/" + id + "|", N: n}
			switch f {
			case sinktest.Unavailable:
				fl.Status, fl.Error = http.StatusInternalServerError, "rollup_error"
			case sinktest.RateLimited:
				fl.Status, fl.Error, fl.RetryAfter = http.StatusTooManyRequests, "rate_limited", 1
			case sinktest.Rejected:
				fl.Status, fl.Error = http.StatusBadRequest, "invalid_payload"
			}
			fake.Fail(fl)
		},
		Supports: []sinktest.Failure{sinktest.Unavailable, sinktest.RateLimited, sinktest.Rejected},
	})
}

type dlq struct{ recs []kafkaio.Record }

func (q *dlq) Produce(_ context.Context, recs ...kafkaio.Record) error {
	q.recs = append(q.recs, recs...)
	return nil
}

func runner(t *testing.T, in sink.Instance, q *dlq) *sink.Runner {
	t.Helper()
	r, err := sink.New(sink.Config{Sink: "sink-webhook", Destination: in.Name, DLQTopic: "dlq", DLQ: q, Checkpoint: in.Checkpoint, Filter: in.Filter,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, MaxAttempts: 3,
		Breaker: retry.NewBreaker(100, time.Second, nil)}, open(t, in))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var seq int

func events(t *testing.T, n int, seg feedbackv1.Segment) []kafkaio.Delivery {
	out := make([]kafkaio.Delivery, n)
	for i := range out {
		seq++
		id := "slack-ev-" + strconv.Itoa(seq)
		c := "Support took three days to answer."
		now := time.Now()
		ev := &feedbackv1.FeedbackEvent{EventId: id, Source: "delighted", Provider: "delighted", ProviderEventType: "survey_response.updated",
			Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: id}, Score: &feedbackv1.Score{Value: 2, Max: 10},
			Segment: seg, Comment: &c, OccurredAt: timestamppb.New(now), ReceivedAt: timestamppb.New(now), Version: timestamppb.New(now),
			Respondent: &feedbackv1.Respondent{Name: "Anna Müller", Email: "anna@example.de"}, Permalink: "https://app.delighted.com/r/" + id,
			Enrichment: &feedbackv1.Enrichment{Labels: []string{"escalate"}, Lookups: map[string]*feedbackv1.LookupResult{"account": {
				Status: feedbackv1.LookupStatus_LOOKUP_STATUS_FOUND}}}}
		v, _ := proto.Marshal(ev)
		out[i] = kafkaio.Delivery{Ctx: context.Background(), Msg: kafka.Message{Topic: "enriched", Offset: int64(seq), Value: v}}
	}
	return out
}

// A backlog (an outage, a flood) is collapsed into one digest message
// instead of a message a second for as long; only detractors by default.
func TestABacklogOfDetractorsBecomesOneDigest(t *testing.T) {
	fake, url := serve(t)
	in := webhookChannel(t, fake, url, "C0DIGEST")
	r := runner(t, in, &dlq{})
	batch := append(events(t, 12, feedbackv1.Segment_SEGMENT_DETRACTOR), events(t, 3, feedbackv1.Segment_SEGMENT_PROMOTER)...)
	if errs := r.HandleBatch(context.Background(), batch); errs != nil {
		t.Fatal(errs)
	}
	posts := fake.Posts()
	if len(posts) != 1 || !strings.HasPrefix(posts[0].Text, "12 detractors in the last") || !strings.Contains(string(posts[0].Blocks), "and 2 more") {
		t.Fatalf("posts %+v, want one digest of the 12 detractors (promoters are not alerted)", posts)
	}
	// A single detractor is an alert of its own, in Block Kit.
	if errs := r.HandleBatch(context.Background(), events(t, 1, feedbackv1.Segment_SEGMENT_DETRACTOR)); errs != nil {
		t.Fatal(errs)
	}
	p := fake.Posts()[1]
	for _, want := range []string{`"type":"header"`, "Detractor: 2/10", "escalate", "Support took three days", "anna@example.de", "View the response"} {
		if !strings.Contains(p.Text+string(p.Blocks), want) {
			t.Fatalf("alert %s %s lacks %q", p.Text, p.Blocks, want)
		}
	}
}

// An archived channel disables the destination: that event and the next are
// dead-lettered (the next without a request), until an operator resumes it.
func TestAnArchivedChannelDisablesTheDestinationUntilResumed(t *testing.T) {
	fake, url := serve(t)
	fake.AddChannel("C0ARCH")
	fake.AddToken("xoxb-fake-token")
	in := tokenChannel(t, url, "C0ARCH", "xoxb-fake-token")
	q := &dlq{}
	r := runner(t, in, q)
	fake.Archive("C0ARCH", true)
	for range 2 {
		if errs := r.HandleBatch(context.Background(), events(t, 1, feedbackv1.Segment_SEGMENT_DETRACTOR)); errs != nil {
			t.Fatal(errs)
		}
	}
	st := r.Status()
	if len(q.recs) != 2 || !st.Disabled || !strings.Contains(st.DisabledReason, "is_archived") {
		t.Fatalf("%d dead letters, status %v; want both dead-lettered and the destination disabled", len(q.recs), st)
	}
	var dl sinkv1.DeadLetter
	_ = proto.Unmarshal(q.recs[1].Value, &dl)
	if !strings.Contains(dl.Error, "disabled") {
		t.Fatalf("second dead letter: %s", dl.Error)
	}
	fake.Archive("C0ARCH", false)
	r.Resume()
	if errs := r.HandleBatch(context.Background(), events(t, 1, feedbackv1.Segment_SEGMENT_DETRACTOR)); errs != nil {
		t.Fatal(errs)
	}
	if posts := fake.Posts(); len(posts) != 1 || posts[0].API != "chat.postMessage" || r.Status().Disabled {
		t.Fatalf("after resume: posts %+v, status %v", posts, r.Status())
	}
}

// A wrong bot token is permanent per event (dead letters), never retried.
func TestChatPostMessageErrorsAreClassified(t *testing.T) {
	fake, url := serve(t)
	fake.AddChannel("C0AUTH")
	in := tokenChannel(t, url, "C0AUTH", "xoxb-revoked")
	q := &dlq{}
	if errs := runner(t, in, q).HandleBatch(context.Background(), events(t, 1, feedbackv1.Segment_SEGMENT_DETRACTOR)); errs != nil {
		t.Fatal(errs)
	}
	var dl sinkv1.DeadLetter
	if len(q.recs) != 1 || proto.Unmarshal(q.recs[0].Value, &dl) != nil || !strings.Contains(dl.Error, "invalid_auth") || len(dl.Attempts) != 1 {
		t.Fatalf("dead letters %v", &dl)
	}
}

// The channel's rate holds: at one a second (burst 3) six alerts take at
// least three seconds and Slack never has to answer 429.
func TestTheChannelRateIsKept(t *testing.T) {
	fake, url := serve(t)
	in := webhookChannel(t, fake, url, "C0RATE")
	r := runner(t, in, &dlq{})
	start := time.Now()
	for range 6 {
		if errs := r.HandleBatch(context.Background(), events(t, 1, feedbackv1.Segment_SEGMENT_DETRACTOR)); errs != nil {
			t.Fatal(errs)
		}
	}
	if took := time.Since(start); took < 2500*time.Millisecond || len(fake.Posts()) != 6 {
		t.Fatalf("6 alerts in %s (%d posted): the channel's rate of 1/s after a burst of 3 was not kept", took, len(fake.Posts()))
	}
}

// With chat.postMessage, a later version of a response (its comment added)
// is a reply in the thread of the response's first alert, not a second alert.
func TestALaterVersionOfAResponseIsAThreadReply(t *testing.T) {
	fake, url := serve(t)
	fake.AddChannel("C0THREAD")
	fake.AddToken("xoxb-fake-token")
	in := tokenChannel(t, url, "C0THREAD", "xoxb-fake-token")
	r := runner(t, in, &dlq{})
	first := events(t, 1, feedbackv1.Segment_SEGMENT_DETRACTOR)
	second := events(t, 1, feedbackv1.Segment_SEGMENT_DETRACTOR)
	// The second is a later version of the first's response.
	var a, b feedbackv1.FeedbackEvent
	_ = proto.Unmarshal(first[0].Msg.Value, &a)
	_ = proto.Unmarshal(second[0].Msg.Value, &b)
	b.Subject = a.Subject
	second[0].Msg.Value, _ = proto.Marshal(&b)
	other := events(t, 1, feedbackv1.Segment_SEGMENT_DETRACTOR)
	for _, batch := range [][]kafkaio.Delivery{first, second, other} {
		if errs := r.HandleBatch(context.Background(), batch); errs != nil {
			t.Fatal(errs)
		}
	}
	posts := fake.Posts()
	if len(posts) != 3 || posts[0].ThreadTS != "" || posts[1].ThreadTS != posts[0].TS || posts[2].ThreadTS != "" ||
		!strings.HasPrefix(posts[1].Text, "Update: ") {
		t.Fatalf("posts %+v: want the second a reply in the first's thread, the third a new alert", posts)
	}
}
