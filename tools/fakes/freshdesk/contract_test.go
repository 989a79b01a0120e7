package freshdeskfake_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/destinations/freshdesk"
	"github.com/closedloop/closedloop/libs/destinations/helpdesk"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	freshdeskfake "github.com/closedloop/closedloop/tools/fakes/freshdesk"
)

const key = "fd-test-key-0123456789"

func serve(t *testing.T) (*freshdeskfake.Server, string) {
	t.Helper()
	fake := freshdeskfake.New()
	fake.PerMinute = 1 << 30
	fake.AddAPIKey(key)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv.URL
}

func account(t *testing.T, rdb redis.UniversalClient, prefix, url, extra string, apiKey string) sink.Instance {
	t.Helper()
	var n yaml.Node
	sec := "accounts:\n  - name: support\n    url: " + url + "\n    api_key: env:FD_KEY\n    requests_per_minute: 100000\n" + extra
	if err := yaml.Unmarshal([]byte(sec), &n); err != nil {
		t.Fatal(err)
	}
	ins, err := freshdesk.Kind.Instances(n.Content[0], sink.KindEnv{Redis: rdb, RedisPrefix: prefix, GroupPrefix: "g-",
		LookupEnv: func(k string) (string, bool) { return apiKey, k == "FD_KEY" }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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

func TestTheFreshdeskDestinationPassesTheContract(t *testing.T) {
	fake, url := serve(t)
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	in := account(t, rdb, "t:"+t.Name()+":", url, "", key)
	d := open(t, in)
	sinktest.Run(t, sinktest.Harness{
		New:        func(*testing.T) sink.Destination { return d },
		Checkpoint: func(*testing.T) sink.Checkpoint { return in.Checkpoint },
		Outcomes: func(*testing.T) map[string]int {
			byMarker := map[string]int{}
			out := map[string]int{}
			tickets := fake.Tickets()
			for _, tk := range tickets {
				for _, tag := range tk.Tags {
					byMarker[tag]++
				}
			}
			for _, tk := range tickets {
				if i := strings.Index(tk.Description, "closedloop event "); i >= 0 {
					id := strings.Fields(tk.Description[i+len("closedloop event "):])[0]
					out[id] = byMarker[helpdesk.Marker(id)]
				}
			}
			return out
		},
		Fail: func(_ *testing.T, id string, f sinktest.Failure, n int) {
			switch f {
			case sinktest.Unavailable:
				fake.Fail(freshdeskfake.Failure{Match: id, Status: 503, N: n})
			case sinktest.RateLimited:
				fake.Fail(freshdeskfake.Failure{Match: id, Status: 429, RetryAfter: 1, N: n})
			case sinktest.Rejected:
				fake.Fail(freshdeskfake.Failure{Match: id, Status: 400, N: n})
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
		Enrichment: &feedbackv1.Enrichment{Lane: feedbackv1.Lane_LANE_PRIORITY},
		ReceivedAt: timestamppb.Now(),
	}}
}

// One ticket per response without an idempotency key: with the Redis record
// gone (a crash between the POST and the record), the ticket is found by
// the requester and the response field; a later version is a private note;
// the response's key is in the custom field.
func TestOneTicketPerResponseWithoutAnIdempotencyKey(t *testing.T) {
	fake, url := serve(t)
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	prefix := "t:" + t.Name() + ":"
	d := open(t, account(t, rdb, prefix, url, "    group_id: 7\n", key))
	ctx := context.Background()
	// Another ticket of the same requester, for another response, first.
	if errs := d.Deliver(ctx, []*sink.Event{detractor("ev-0", "r-0", "other")}); errs != nil {
		t.Fatal(errs)
	}
	if errs := d.Deliver(ctx, []*sink.Event{detractor("ev-1", "r-1", "Slow exports")}); errs != nil {
		t.Fatal(errs)
	}
	// The record is lost (a crash between the POST and the record); the
	// attempt recorded before the POST remains.
	keys, _ := rdb.Keys(ctx, prefix+"*ticket*").Result()
	for _, k := range keys {
		if !strings.HasSuffix(k, ":attempt") {
			rdb.Del(ctx, k)
		}
	}
	if errs := d.Deliver(ctx, []*sink.Event{detractor("ev-1", "r-1", "Slow exports"), detractor("ev-2", "r-1", "Slow exports, and support took a week")}); errs != nil {
		t.Fatal(errs)
	}
	tk := fake.Tickets()
	if len(tk) != 2 || tk[1].CustomFields["cf_closedloop_response"] != "delighted/response/r-1" || tk[1].Priority != 4 || tk[1].Status != 2 ||
		tk[1].GroupID != 7 || len(tk[1].Notes) != 1 || !tk[1].Notes[0].Private || !strings.Contains(tk[1].Notes[0].Body, "took a week") ||
		!strings.Contains(tk[1].Description, "Slow exports") || len(tk[0].Notes) != 0 {
		t.Fatalf("tickets %+v", tk)
	}
}

func classOf(err error) sinkv1.ErrorClass {
	c, _, _ := sink.Classify(err)
	return c
}

// A refused API key holds the events and disables the destination until
// the key is replaced; a validation error is permanent for its event only.
func TestARefusedKeyHoldsAndAValidationErrorIsPermanent(t *testing.T) {
	fake, url := serve(t)
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	prefix := "t:" + t.Name() + ":"
	fake.RevokeAPIKey(key)
	d := open(t, account(t, rdb, prefix, url, "", key))
	errs := d.Deliver(context.Background(), []*sink.Event{detractor("ev-1", "r-1", "x")})
	if errs == nil || classOf(errs[0]) != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE {
		t.Fatalf("a refused key: %v", errs)
	}
	if why, off := d.(sink.Disabler).Disabled(); !off || !strings.Contains(why, "401") {
		t.Fatalf("disabled %v %q", off, why)
	}
	fake.AddAPIKey("fd-new-key-0123456789")
	fresh := open(t, account(t, rdb, prefix, url, "    response_field: cf_nosuch\n", "fd-new-key-0123456789"))
	if _, off := fresh.(sink.Disabler).Disabled(); off {
		t.Fatal("a new key is still disabled")
	}
	errs = fresh.Deliver(context.Background(), []*sink.Event{detractor("ev-2", "r-2", "y")})
	if errs == nil || classOf(errs[0]) != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT || !strings.Contains(errs[0].Error(), "cf_nosuch") {
		t.Fatalf("an unknown custom field: %v", errs)
	}
}
