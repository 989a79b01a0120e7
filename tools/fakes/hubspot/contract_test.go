package hubspotfake_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/destinations/crm/crmtest"
	"github.com/closedloop/closedloop/libs/destinations/hubspot"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	hubspotfake "github.com/closedloop/closedloop/tools/fakes/hubspot"
)

const token = "pat-na1-test-0123456789"

func serve(t *testing.T) (*hubspotfake.Server, string) {
	t.Helper()
	fake := hubspotfake.New()
	fake.AddToken(token)
	fake.PerTenSeconds = 100000
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv.URL
}

func section(url, extra string) string {
	return "accounts:\n  - name: crm\n    url: " + url + "\n    token: env:HS_TOKEN\n    requests_per_10s: 100000\n    timeout: 2s\n" +
		"    unsubscribe:\n      subscription: Marketing Information\n" + extra
}

// account builds the destination from a `sinks.hubspot` section through the
// kind's own decoding, as the service does.
func account(t *testing.T, rdb redis.UniversalClient, url, extra string, recs *crmtest.Records) (sink.Instance, sink.KindEnv) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(section(url, extra)), &n); err != nil {
		t.Fatal(err)
	}
	env := crmtest.Env(sink.KindEnv{Redis: rdb, RedisPrefix: "t:" + t.Name() + ":", GroupPrefix: "g-",
		LookupEnv: func(k string) (string, bool) { return token, k == "HS_TOKEN" }}, recs)
	ins, err := hubspot.Kind.Instances(n.Content[0], env)
	if err != nil {
		t.Fatal(err)
	}
	return ins[0], env
}

func open(t *testing.T, in sink.Instance) *hubspot.Destination {
	t.Helper()
	d, err := in.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d.(*hubspot.Destination)
}

func newRedis(t *testing.T) redis.UniversalClient {
	return redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
}

func TestTheHubSpotDestinationPassesTheContract(t *testing.T) {
	fake, url := serve(t)
	in, _ := account(t, newRedis(t), url, "", &crmtest.Records{})
	d := open(t, in)
	sinktest.Run(t, sinktest.Harness{
		New:        func(*testing.T) sink.Destination { return d },
		Checkpoint: func(*testing.T) sink.Checkpoint { return in.Checkpoint },
		// Each event its own person: the suite counts writes per event.
		Event: func(ev *feedbackv1.FeedbackEvent) { ev.Respondent.Email = ev.EventId + "@example.com" },
		Outcomes: func(*testing.T) map[string]int {
			out := map[string]int{}
			for _, w := range fake.Writes() {
				out[w.Properties["closedloop_event_id"]]++
			}
			return out
		},
		Fail: func(_ *testing.T, id string, f sinktest.Failure, n int) {
			switch f {
			case sinktest.Unavailable:
				fake.Fail(hubspotfake.Failure{Match: id, Status: 502, N: n})
			case sinktest.RateLimited:
				fake.Fail(hubspotfake.Failure{Match: id, Status: 429, RetryAfter: 1, N: n})
			case sinktest.Rejected:
				fake.Fail(hubspotfake.Failure{Match: id, Status: 400, N: n})
			}
		},
		Supports: []sinktest.Failure{sinktest.Unavailable, sinktest.RateLimited, sinktest.Rejected},
	})
}

func TestTheHubSpotDestinationPassesTheCRMContract(t *testing.T) {
	rdb := newRedis(t)
	var fake *hubspotfake.Server
	var d *hubspot.Destination
	crmtest.Run(t, crmtest.Harness{
		New: func(t *testing.T) (sink.Destination, *crmtest.Records) {
			var url string
			fake, url = serve(t)
			recs := &crmtest.Records{}
			in, _ := account(t, rdb, url, "", recs)
			d = open(t, in)
			return d, recs
		},
		AddContact: func(_ *testing.T, email string) { fake.AddContact(email, nil) },
		Field: func(_ *testing.T, email, key string) string {
			return fake.Contacts()[strings.ToLower(email)].Properties["closedloop_"+key]
		},
		OptedOut: func(_ *testing.T, email string) bool { return fake.Status(email, "1001") == "NOT_SUBSCRIBED" },
		OptOuts: func(_ *testing.T, email string) int {
			n := 0
			for _, u := range fake.Unsubscribes() {
				if u.Email == strings.ToLower(email) {
					n++
				}
			}
			return n
		},
		Pending: func(t *testing.T) int64 {
			p, _, err := d.Recorder.PendingCounts(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
	})
}

// Start-up creates the missing properties (and says so) or, with
// create_properties: false, names them; a batch HubSpot refuses whole (400)
// is retried input by input, so only the bad input fails, permanently; a
// detractor gets a task associated with the contact; a daily limit pushes
// every request back; a revoked token disables the destination.
func TestHubSpotPropertiesBatchesTasksLimitsAndTokens(t *testing.T) {
	fake, url := serve(t)
	rdb := newRedis(t)
	strict, _ := account(t, rdb, url, "    create_properties: false\n", &crmtest.Records{})
	if _, err := strict.Open(context.Background()); err == nil || !strings.Contains(err.Error(), "closedloop_last_score") {
		t.Fatalf("create_properties false without the properties: %v, want an error naming them", err)
	}
	in, _ := account(t, rdb, url, "    tasks: {create: task, priorities: [{when: 'true', priority: low}]}\n", &crmtest.Records{})
	d := open(t, in)
	fake.BatchErrors = "whole"
	now := time.Now()
	good, bad := crmtest.Response("hs-good", "good@example.com", now, 2), crmtest.Response("hs-bad", "bad@example.com", now, 9)
	fake.Fail(hubspotfake.Failure{Match: "bad@example.com", Status: 400, N: 1 << 30})
	errs := crmtest.Deliver(t, d, good, bad)
	if errs == nil || errs[0] != nil {
		t.Fatalf("errors %v: want the good input written", errs)
	}
	if class, _, _ := sink.Classify(errs[1]); class != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT {
		t.Fatalf("the refused input: %v (%v), want permanent", errs[1], class)
	}
	fake.ClearFailures()
	c := fake.Contacts()["good@example.com"]
	if c.Properties["closedloop_last_score"] != "2" || c.Properties["closedloop_segment"] != "detractor" || c.Properties["closedloop_score_scale"] != "0-10" {
		t.Fatalf("contact %v: want the feedback properties", c.Properties)
	}
	tasks := fake.Objects("tasks")
	if len(tasks) != 1 || len(tasks[0].Associations) != 1 || tasks[0].Associations[0] != c.ID || tasks[0].Properties["hs_task_priority"] != "LOW" {
		t.Fatalf("tasks %v: want one, LOW, associated with contact %s", tasks, c.ID)
	}
	// The same response again (a retry after a lost answer): no second task.
	if errs := crmtest.Deliver(t, d, good); errs != nil {
		t.Fatal(errs)
	}
	if n := len(fake.Objects("tasks")); n != 1 {
		t.Fatalf("%d tasks after a retry", n)
	}
	// The day's calls are spent: retried later, every replica held.
	fake.Daily = 1
	errs = crmtest.Deliver(t, d, crmtest.Response("hs-day", "day@example.com", now.Add(time.Second), 7))
	if class, after, _ := sink.Classify(errs[0]); class != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE || after != 10*time.Minute {
		t.Fatalf("daily limit: %v (%v, after %s), want retryable after 10m", errs[0], class, after)
	}
	fake.Daily = 0
	fake.RevokeToken(token)
	_ = rdb.Del(context.Background(), "t:"+t.Name()+":rate:"+strings.TrimPrefix(url, "http://")).Err() // the pushed-back rate
	errs = crmtest.Deliver(t, d, crmtest.Response("hs-401", "tok@example.com", now.Add(2*time.Second), 7))
	if why, off := d.Disabled(); !off || !strings.Contains(why, "401") {
		t.Fatalf("after a 401: disabled %v (%q), errors %v", off, why, errs)
	}
}
