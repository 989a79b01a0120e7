package salesforcefake_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/destinations/crm"
	"github.com/closedloop/closedloop/libs/destinations/crm/crmtest"
	"github.com/closedloop/closedloop/libs/destinations/salesforce"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	salesforcefake "github.com/closedloop/closedloop/tools/fakes/salesforce"
)

const (
	clientID = "3MVG9-test-client"
	secret   = "sf-test-secret-0123456789"
)

func serve(t *testing.T) (*salesforcefake.Server, string) {
	t.Helper()
	fake := salesforcefake.New(clientID, secret)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv.URL
}

func section(url, auth, extra string) string {
	if auth == "" {
		auth = "      flow: client_credentials\n      client_id: " + clientID + "\n      client_secret: env:SF_SECRET\n"
	}
	return "accounts:\n  - name: org\n    url: " + url + "\n    requests_per_minute: 100000\n    timeout: 2s\n    objects: [Contact, Lead]\n    auth:\n" + auth + extra
}

func account(t *testing.T, rdb redis.UniversalClient, sec string, env map[string]string, recs *crmtest.Records) sink.Instance {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(sec), &n); err != nil {
		t.Fatal(err)
	}
	if env == nil {
		env = map[string]string{"SF_SECRET": secret}
	}
	kenv := crmtest.Env(sink.KindEnv{Redis: rdb, RedisPrefix: "t:" + t.Name() + ":", GroupPrefix: "g-",
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}, recs)
	ins, err := salesforce.Kind.Instances(n.Content[0], kenv)
	if err != nil {
		t.Fatal(err)
	}
	return ins[0]
}

func open(t *testing.T, in sink.Instance) *salesforce.Destination {
	t.Helper()
	d, err := in.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d.(*salesforce.Destination)
}

func newRedis(t *testing.T) redis.UniversalClient {
	return redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
}

func TestTheSalesforceDestinationPassesTheContract(t *testing.T) {
	fake, url := serve(t)
	in := account(t, newRedis(t), section(url, "", ""), nil, &crmtest.Records{})
	d := open(t, in)
	sinktest.Run(t, sinktest.Harness{
		New:        func(*testing.T) sink.Destination { return d },
		Checkpoint: func(*testing.T) sink.Checkpoint { return in.Checkpoint },
		// Each event its own Contact: the suite counts writes per event.
		Event: func(ev *feedbackv1.FeedbackEvent) {
			ev.Respondent.Email = ev.EventId + "@example.com"
			fake.Add("Contact", salesforcefake.Record{"Email": ev.Respondent.Email, "LastName": "Test"})
		},
		Outcomes: func(*testing.T) map[string]int {
			out := map[string]int{}
			for _, w := range fake.Writes() {
				if id, ok := w["Closedloop_Event_Id__c"].(string); ok {
					out[id]++
				}
			}
			return out
		},
		Fail: func(_ *testing.T, id string, f sinktest.Failure, n int) {
			switch f {
			case sinktest.Unavailable:
				fake.Fail(salesforcefake.Failure{Match: id, Status: 503, N: n})
			case sinktest.Rejected:
				// The response link is only in the update's body.
				fake.Fail(salesforcefake.Failure{Match: "delighted.com/r/" + id, Status: 400, N: n})
			}
		},
		// Salesforce has no 429: its org quota is 403 REQUEST_LIMIT_EXCEEDED,
		// retried after a minute (TestTheOrgQuotaIsRetriedNotDeadLettered).
		Supports: []sinktest.Failure{sinktest.Unavailable, sinktest.Rejected},
	})
}

func harness(t *testing.T, rdb redis.UniversalClient) crmtest.Harness {
	var fake *salesforcefake.Server
	var d *salesforce.Destination
	find := func(email string) []salesforcefake.Record {
		var out []salesforcefake.Record
		for _, obj := range []string{"Contact", "Lead"} {
			for _, r := range fake.Records(obj) {
				if strings.EqualFold(fmt.Sprint(r["Email"]), email) {
					out = append(out, r)
				}
			}
		}
		return out
	}
	return crmtest.Harness{
		New: func(t *testing.T) (sink.Destination, *crmtest.Records) {
			var url string
			fake, url = serve(t)
			recs := &crmtest.Records{}
			d = open(t, account(t, rdb, section(url, "", ""), nil, recs))
			return d, recs
		},
		AddContact: func(_ *testing.T, email string) {
			fake.Add("Contact", salesforcefake.Record{"Email": email, "LastName": "Test"})
		},
		Field: func(t *testing.T, email, key string) string {
			rs := find(email)
			if len(rs) == 0 {
				return ""
			}
			for _, f := range crm.Fields {
				if f.Key == key {
					v := rs[0][salesforce.DefaultField(f)]
					if v == nil {
						return ""
					}
					return fmt.Sprint(v)
				}
			}
			t.Fatalf("no field %s", key)
			return ""
		},
		OptedOut: func(_ *testing.T, email string) bool {
			rs := find(email)
			for _, r := range rs {
				if r["HasOptedOutOfEmail"] != true {
					return false
				}
			}
			return len(rs) > 0
		},
		OptOuts: func(_ *testing.T, email string) int {
			n := 0
			for _, w := range fake.Writes() {
				for _, r := range find(email) {
					if w["Id"] == r["Id"] && w["HasOptedOutOfEmail"] == true {
						n++
					}
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
	}
}

func TestTheSalesforceDestinationPassesTheCRMContract(t *testing.T) {
	crmtest.Run(t, harness(t, newRedis(t)))
}

// An expired session is renewed and the call made again; a Lead is found
// when no Contact has the email; every record of an email is opted out; a
// validation rule's refusal carries Salesforce's code and is permanent for
// that event only; an email nobody has is not an error.
func TestSalesforceSessionsLeadsAndRecordErrors(t *testing.T) {
	fake, url := serve(t)
	recs := &crmtest.Records{}
	d := open(t, account(t, newRedis(t), section(url, "", ""), nil, recs))
	fake.Add("Lead", salesforcefake.Record{"Email": "lead@example.com", "LastName": "Lead", "Company": "X"})
	fake.Add("Contact", salesforcefake.Record{"Email": "twice@example.com", "LastName": "One"})
	fake.Add("Contact", salesforcefake.Record{"Email": "Twice@example.com", "LastName": "Two"})
	fake.Add("Contact", salesforcefake.Record{"Email": "bad@example.com", "LastName": "Bad"})
	fake.ExpireTokens()
	now := time.Now()
	fake.Fail(salesforcefake.Failure{Match: "delighted.com/r/e-bad", Status: 400, N: 1})
	errs := crmtest.Deliver(t, d, crmtest.Response("e-lead", "lead@example.com", now, 3), crmtest.Response("e-bad", "bad@example.com", now, 9),
		crmtest.Response("e-none", "nobody@example.com", now, 5), crmtest.Unsubscribe("u-twice", "twice@example.com"))
	if errs == nil || errs[0] != nil || errs[2] != nil || errs[3] != nil {
		t.Fatalf("errors %v: want only the refused record's", errs)
	}
	if class, _, _ := sink.Classify(errs[1]); class != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT || !strings.Contains(errs[1].Error(), "FIELD_CUSTOM_VALIDATION_EXCEPTION") {
		t.Fatalf("refused record: %v (%v), want permanent with Salesforce's code", errs[1], class)
	}
	leads := fake.Records("Lead")
	if leads[0]["Closedloop_Last_Score__c"] != 3.0 || leads[0]["Closedloop_Segment__c"] != "detractor" {
		t.Fatalf("lead %v: want the feedback fields", leads[0])
	}
	if tasks := fake.Records("Task"); len(tasks) != 1 || tasks[0]["WhoId"] != leads[0]["Id"] || tasks[0]["Priority"] != "High" {
		t.Fatalf("tasks %v: want one for the detractor lead", tasks)
	}
	n := 0
	for _, c := range fake.Records("Contact") {
		if strings.EqualFold(fmt.Sprint(c["Email"]), "twice@example.com") && c["HasOptedOutOfEmail"] == true {
			n++
		}
	}
	ps := recs.Propagations(t)
	if n != 2 || len(ps) != 1 || ps[0].Result != sinkv1.PropagationResult_PROPAGATION_RESULT_APPLIED || strings.Count(ps[0].Detail, "Contact 003") != 2 {
		t.Fatalf("%d of the two contacts opted out, propagations %v", n, ps)
	}
}

// The org's daily quota (403 REQUEST_LIMIT_EXCEEDED) holds the events for
// a minute; nothing is dead-lettered, and the destination stays enabled.
func TestTheOrgQuotaIsRetriedNotDeadLettered(t *testing.T) {
	fake, url := serve(t)
	d := open(t, account(t, newRedis(t), section(url, "", ""), nil, &crmtest.Records{}))
	fake.Add("Contact", salesforcefake.Record{"Email": "q@example.com", "LastName": "Q"})
	fake.DailyLimit = 1
	errs := crmtest.Deliver(t, d, crmtest.Response("e-q", "q@example.com", time.Now(), 8))
	class, after, _ := sink.Classify(errs[0])
	if class != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE || after != time.Minute || !strings.Contains(errs[0].Error(), "REQUEST_LIMIT_EXCEEDED") {
		t.Fatalf("%v (%v, after %s): want retryable after a minute", errs[0], class, after)
	}
	if why, off := d.Disabled(); off {
		t.Fatalf("disabled by the quota: %s", why)
	}
}

// The JWT bearer flow signs an assertion the org verifies; a client the
// token endpoint refuses disables the destination (held, with the reason).
func TestSalesforceJWTBearerAndARefusedClient(t *testing.T) {
	fake, url := serve(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	fake.Key, fake.Users["integration@example.com"] = &key.PublicKey, true
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	jwt := "      flow: jwt_bearer\n      client_id: " + clientID + "\n      username: integration@example.com\n      private_key: env:SF_KEY\n"
	d := open(t, account(t, newRedis(t), section(url, jwt, ""), map[string]string{"SF_KEY": pemKey}, &crmtest.Records{}))
	fake.Add("Contact", salesforcefake.Record{"Email": "j@example.com", "LastName": "J"})
	if errs := crmtest.Deliver(t, d, crmtest.Response("e-j", "j@example.com", time.Now(), 10)); errs != nil {
		t.Fatalf("JWT bearer: %v", errs)
	}
	wrong := open(t, account(t, newRedis(t), section(url, "", ""), map[string]string{"SF_SECRET": "wrong"}, &crmtest.Records{}))
	if why, off := wrong.Disabled(); !off || !strings.Contains(why, "refused") {
		t.Fatalf("a refused client: disabled %v (%q)", off, why)
	}
	if errs := crmtest.Deliver(t, wrong, crmtest.Response("e-w", "j@example.com", time.Now(), 1)); errs == nil {
		t.Fatal("a disabled destination delivered")
	} else if class, _, _ := sink.Classify(errs[0]); class != sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE {
		t.Fatalf("a disabled destination's event is %v, want held (retryable)", class)
	}
}
