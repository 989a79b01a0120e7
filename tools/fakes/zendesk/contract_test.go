package zendeskfake_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/destinations/zendesk"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	zendeskfake "github.com/closedloop/closedloop/tools/fakes/zendesk"
)

const (
	agent = "agent@example.com"
	token = "zd-test-token-0123456789"
)

func serve(t *testing.T) (*zendeskfake.Server, string) {
	t.Helper()
	fake := zendeskfake.New()
	fake.AddAPIToken(agent, token)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv.URL
}

// account builds a Zendesk destination from a `sinks.zendesk` section
// through the kind's own decoding, as the service does.
func account(t *testing.T, rdb redis.UniversalClient, prefix, section string, env map[string]string) sink.Instance {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(section), &n); err != nil {
		t.Fatal(err)
	}
	ins, err := zendesk.Kind.Instances(n.Content[0], sink.KindEnv{Redis: rdb, RedisPrefix: prefix, GroupPrefix: "g-",
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return ins[0]
}

func section(url, extra string) string {
	return "accounts:\n  - name: support\n    url: " + url + "\n    email: " + agent + "\n    api_token: env:ZD_TOKEN\n    requests_per_minute: 100000\n" + extra
}

func newRedis(t *testing.T) redis.UniversalClient {
	return redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
}

func open(t *testing.T, in sink.Instance) sink.Destination {
	t.Helper()
	d, err := in.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// perEvent counts, per event id, the tickets that hold it.
func perEvent(fake *zendeskfake.Server, ids ...string) map[string]int {
	out := map[string]int{}
	for _, tk := range fake.Tickets() {
		for _, tag := range tk.Tags {
			if strings.HasPrefix(tag, "closedloop_ev_") {
				out[tag]++
			}
		}
	}
	return out
}

func TestTheZendeskDestinationPassesTheContract(t *testing.T) {
	fake, url := serve(t)
	rdb := newRedis(t)
	in := account(t, rdb, "t:"+t.Name()+":", section(url, ""), map[string]string{"ZD_TOKEN": token})
	d := open(t, in)
	sinktest.Run(t, sinktest.Harness{
		New:        func(*testing.T) sink.Destination { return d },
		Checkpoint: func(*testing.T) sink.Checkpoint { return in.Checkpoint },
		Outcomes: func(*testing.T) map[string]int {
			byMarker := perEvent(fake)
			out := map[string]int{}
			for _, tk := range fake.Tickets() {
				for _, c := range tk.Comments {
					if i := strings.Index(c.Body, "closedloop event "); i >= 0 {
						id := strings.Fields(c.Body[i+len("closedloop event "):])[0]
						out[id] = byMarker[zendesk.Marker(id)]
					}
				}
			}
			return out
		},
		Fail: func(_ *testing.T, id string, f sinktest.Failure, n int) {
			switch f {
			case sinktest.Unavailable:
				fake.Fail(zendeskfake.Failure{Match: id, Status: 503, N: n})
			case sinktest.RateLimited:
				fake.Fail(zendeskfake.Failure{Match: id, Status: 429, RetryAfter: 1, N: n})
			case sinktest.Rejected:
				fake.Fail(zendeskfake.Failure{Match: id, Status: 422, N: n})
			}
		},
		Supports: []sinktest.Failure{sinktest.Unavailable, sinktest.RateLimited, sinktest.Rejected},
	})
}

func detractor(id, subject, comment string) *sink.Event {
	c := comment
	return &sink.Event{Ctx: context.Background(), Feedback: &feedbackv1.FeedbackEvent{
		EventId: id, Source: "delighted", Provider: "delighted", Kind: feedbackv1.Kind_KIND_RESPONSE_CREATED,
		Subject: &feedbackv1.Subject{Type: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, Id: subject},
		Score:   &feedbackv1.Score{Value: 2, Min: 0, Max: 10}, Segment: feedbackv1.Segment_SEGMENT_DETRACTOR, Comment: &c,
		Respondent: &feedbackv1.Respondent{Email: "omar@example.com", Name: "Omar"},
		Survey:     &feedbackv1.Survey{Name: "Quarterly NPS", Type: feedbackv1.SurveyType_SURVEY_TYPE_NPS},
		Enrichment: &feedbackv1.Enrichment{Lane: feedbackv1.Lane_LANE_PRIORITY, Labels: []string{"escalate"}},
		ReceivedAt: timestamppb.Now(),
	}}
}

func classOf(err error) sinkv1.ErrorClass {
	c, _, _ := sink.Classify(err)
	return c
}

// One ticket per response: a later version is a private comment on it, a
// version it holds already (a redelivery after a crash between the POST
// and the checkpoint, with the Redis record gone too) changes nothing, and
// a version after the ticket was closed opens a follow-up.
func TestOneTicketPerResponseLaterVersionsCommentAndAClosedTicketGetsAFollowUp(t *testing.T) {
	fake, url := serve(t)
	rdb := newRedis(t)
	prefix := "t:" + t.Name() + ":"
	d := open(t, account(t, rdb, prefix, section(url, "    group_id: 42\n    tags: [nps]\n"), map[string]string{"ZD_TOKEN": token}))
	ctx := context.Background()
	if errs := d.Deliver(ctx, []*sink.Event{detractor("ev-1", "r-1", "Slow exports")}); errs != nil {
		t.Fatal(errs)
	}
	tk := fake.Tickets()
	if len(tk) != 1 || tk[0].ExternalID != "delighted/response/r-1" || tk[0].Priority != "urgent" || tk[0].GroupID != 42 ||
		tk[0].Requester.Email != "omar@example.com" || tk[0].Comments[0].Public || !strings.Contains(tk[0].Comments[0].Body, "Slow exports") ||
		!strings.HasPrefix(tk[0].Subject, "Detractor 2/10 from Omar") || !contains(tk[0].Tags, "nps") || !contains(tk[0].Tags, "closedloop_escalate") ||
		tk[0].IdempotencyKey == "" {
		t.Fatalf("ticket %+v", tk)
	}
	// The Redis record lost: the ticket is found by its external id.
	keys, _ := rdb.Keys(ctx, prefix+"*ticket*").Result()
	rdb.Del(ctx, keys...)
	if errs := d.Deliver(ctx, []*sink.Event{detractor("ev-1", "r-1", "Slow exports")}); errs != nil {
		t.Fatal(errs)
	}
	if errs := d.Deliver(ctx, []*sink.Event{detractor("ev-2", "r-1", "Slow exports, and support took a week")}); errs != nil {
		t.Fatal(errs)
	}
	tk = fake.Tickets()
	if len(tk) != 1 || len(tk[0].Comments) != 2 || !strings.Contains(tk[0].Comments[1].Body, "took a week") || tk[0].Comments[1].Public {
		t.Fatalf("after a redelivery and a later version: %+v", tk)
	}
	fake.SetStatus(tk[0].ID, "closed")
	if errs := d.Deliver(ctx, []*sink.Event{detractor("ev-3", "r-1", "Still broken")}); errs != nil {
		t.Fatal(errs)
	}
	tk = fake.Tickets()
	if len(tk) != 2 || tk[1].FollowUpOf != tk[0].ID || tk[1].ExternalID != tk[0].ExternalID {
		t.Fatalf("after the ticket was closed: %+v", tk)
	}
}

// A refused credential disables the destination with the reason and holds
// the events (retryable: nothing dead-lettered); a replaced credential
// clears it at start.
func TestARevokedTokenDisablesAndHoldsUntilTheCredentialIsReplaced(t *testing.T) {
	fake, url := serve(t)
	rdb := newRedis(t)
	prefix := "t:" + t.Name() + ":"
	fake.RevokeAPIToken(agent)
	d := open(t, account(t, rdb, prefix, section(url, ""), map[string]string{"ZD_TOKEN": token}))
	errs := d.Deliver(context.Background(), []*sink.Event{detractor("ev-1", "r-1", "x"), detractor("ev-2", "r-2", "y")})
	if errs == nil || classOf(errs[0]) != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE || classOf(errs[1]) != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE {
		t.Fatalf("a refused token: %v", errs)
	}
	why, off := d.(sink.Disabler).Disabled()
	if !off || !strings.Contains(why, "401") || !strings.Contains(why, "refused") {
		t.Fatalf("disabled %v %q", off, why)
	}
	// A restart with the same credential stays disabled; with a new one it
	// is enabled and delivers.
	again := open(t, account(t, rdb, prefix, section(url, ""), map[string]string{"ZD_TOKEN": token}))
	if _, off := again.(sink.Disabler).Disabled(); !off {
		t.Fatal("the same refused credential was enabled again at start")
	}
	fake.AddAPIToken(agent, "zd-new-token-0123456789")
	fresh := open(t, account(t, rdb, prefix, section(url, ""), map[string]string{"ZD_TOKEN": "zd-new-token-0123456789"}))
	if _, off := fresh.(sink.Disabler).Disabled(); off {
		t.Fatal("a new credential is still disabled")
	}
	if errs := fresh.Deliver(context.Background(), []*sink.Event{detractor("ev-1", "r-1", "x")}); errs != nil || len(fake.Tickets()) != 1 {
		t.Fatalf("after the new credential: %v, %d tickets", errs, len(fake.Tickets()))
	}
}

// Zendesk's validation errors and a template that cannot render the event
// are permanent for that event only; a response without an email needs a
// fallback requester.
func TestValidationAndTemplateErrorsArePermanentForTheEvent(t *testing.T) {
	fake, url := serve(t)
	rdb := newRedis(t)
	d := open(t, account(t, rdb, "t:"+t.Name()+":", section(url, "    subject: '{{.Account.tier}} detractor'\n"), map[string]string{"ZD_TOKEN": token}))
	errs := d.Deliver(context.Background(), []*sink.Event{detractor("ev-1", "r-1", "x")})
	if errs == nil || classOf(errs[0]) != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT || !strings.Contains(errs[0].Error(), "subject template") {
		t.Fatalf("template: %v", errs)
	}
	d2 := open(t, account(t, rdb, "t2:"+t.Name()+":", section(url, ""), map[string]string{"ZD_TOKEN": token}))
	bad := detractor("ev-2", "r-2", "x")
	bad.Feedback.Respondent.Email = "not an email"
	noMail := detractor("ev-3", "r-3", "x")
	noMail.Feedback.Respondent.Email = ""
	errs = d2.Deliver(context.Background(), []*sink.Event{bad, noMail, detractor("ev-4", "r-4", "fine")})
	if errs == nil || classOf(errs[0]) != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT || !strings.Contains(errs[0].Error(), "422") ||
		classOf(errs[1]) != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT || errs[2] != nil || len(fake.Tickets()) != 1 {
		t.Fatalf("validation: %v, %d tickets", errs, len(fake.Tickets()))
	}
}

// The plan's limit is the account's: two destinations (two replicas) of
// the account take their slots from one bucket in Redis, and a 429 moves
// that bucket past its Retry-After for both.
func TestThePlanLimitIsSharedAcrossReplicas(t *testing.T) {
	fake, url := serve(t)
	rdb := newRedis(t)
	prefix := "t:" + t.Name() + ":"
	ctx := context.Background()
	a := open(t, account(t, rdb, prefix, section(url, ""), map[string]string{"ZD_TOKEN": token}))
	b := open(t, account(t, rdb, prefix, section(url, ""), map[string]string{"ZD_TOKEN": token}))
	for i, d := range []sink.Destination{a, b} {
		if errs := d.Deliver(ctx, []*sink.Event{detractor("ev-"+strconv.Itoa(i), "r-"+strconv.Itoa(i), "x")}); errs != nil {
			t.Fatal(errs)
		}
	}
	keys, err := rdb.Keys(ctx, prefix+"rate:*").Result()
	host := strings.TrimPrefix(url, "http://")
	if err != nil || len(keys) != 1 || keys[0] != prefix+"rate:"+host {
		t.Fatalf("rate buckets %v, want one for the account %s", keys, host)
	}
	fake.Fail(zendeskfake.Failure{Status: 429, RetryAfter: 30, N: 1})
	errs := a.Deliver(ctx, []*sink.Event{detractor("ev-9", "r-9", "x")})
	if _, after, _ := sink.Classify(errs[0]); classOf(errs[0]) != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE || after < 30*time.Second {
		t.Fatalf("a 429 with Retry-After 30: %v (after %s)", errs, after)
	}
	// What the other replica would wait for its next request.
	shared := sink.SharedRate{RDB: rdb, Key: keys[0], Every: time.Minute / 100000, Burst: 10000}
	if wait, err := shared.Reserve(ctx); err != nil || wait < 25*time.Second {
		t.Fatalf("after the 429 the shared bucket makes the next request wait %s (%v), want about 30s", wait, err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
