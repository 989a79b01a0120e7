package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/destinations/crm/crmtest"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	hubspotfake "github.com/closedloop/closedloop/tools/fakes/hubspot"
	salesforcefake "github.com/closedloop/closedloop/tools/fakes/salesforce"
)

// TestCRMsKeepTheNewestFeedbackAndApplyEachUnsubscribeOnceThroughAKill
// runs sink-webhook with a HubSpot and a Salesforce destination (their
// fakes), sink-warehouse and the admin as processes. Each person answers
// three times; the versions reach the enriched topic out of order (newest
// first for some, old ones replayed after), and unsubscribes arrive,
// some twice, some for people HubSpot does not know. sink-webhook is killed
// (SIGKILL) in the middle and restarted. Then every contact in both CRMs
// holds exactly its newest response; every unsubscribe was applied once
// per CRM (the fakes count the opt-outs), the unknown ones recorded as
// such and not dead-lettered; each propagation is one row of the
// warehouse's unsubscribe_propagations table, and closedloopctl
// unsubscribes lists them with the time each took.
func TestCRMsKeepTheNewestFeedbackAndApplyEachUnsubscribeOnceThroughAKill(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	const people, optOuts, strangers = 240, 90, 30
	killAfter := people / 3
	if v := os.Getenv("E2E_CRM_KILL_AFTER"); v != "" {
		killAfter, _ = strconv.Atoi(v)
	}
	hs := hubspotfake.New()
	hs.PerTenSeconds = 1 << 30
	hs.AddToken("pat-e2e-crm")
	hs.SetLatency(2 * time.Millisecond)
	sf := salesforcefake.New("e2e-crm-client", "e2e-crm-secret")
	sf.SetLatency(2 * time.Millisecond)
	email := func(i int) string { return fmt.Sprintf("person%03d@example.com", i) }
	for i := range people { // everyone is a contact in both CRMs already
		sf.Add("Contact", salesforcefake.Record{"Email": email(i), "LastName": "P"})
		hs.AddContact(email(i), map[string]string{"lastname": "P"})
	}
	hsSrv, sfSrv := httptest.NewServer(hs), httptest.NewServer(sf)
	t.Cleanup(hsSrv.Close)
	t.Cleanup(sfSrv.Close)

	p := pipelineSpec("e2e_crm", infra.broker.Addrs, infra.redis.Addr, "E2E_HS_TOKEN=pat-e2e-crm", "E2E_SF_SECRET=e2e-crm-secret",
		"SINK_BACKOFF_MAX=300ms", "LOG_LEVEL=warn", "CONSUMER_SESSION_TIMEOUT=6s")
	p.Run = []string{"sink-warehouse", "sink-webhook", "admin"}
	p.AdminTokens = map[string]string{"ops": "operator"}
	p.SinksYAML = "  hubspot:\n    accounts:\n      - name: crm\n        url: " + hsSrv.URL + "\n        token: env:E2E_HS_TOKEN\n" +
		"        requests_per_10s: 1000000\n        timeout: 2s\n        tasks: {create: note}\n" +
		"        unsubscribe:\n          subscription: Marketing Information\n          legal_basis: LEGITIMATE_INTEREST_CLIENT\n" +
		"          legal_basis_explanation: Unsubscribed in the survey tool\n" +
		"  salesforce:\n    accounts:\n      - name: org\n        url: " + sfSrv.URL + "\n        requests_per_minute: 1000000\n        timeout: 2s\n" +
		"        objects: [Contact, Lead]\n        auth:\n          flow: client_credentials\n          client_id: e2e-crm-client\n" +
		"          client_secret: env:E2E_SF_SECRET\n"
	startPipeline(t, p)

	w := &kafka.Writer{Addr: kafka.TCP(strings.Split(p.Brokers, ",")...), Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond, Transport: &kafka.Transport{}}
	defer w.Close()
	produce := func(evs ...*feedbackv1.FeedbackEvent) {
		t.Helper()
		msgs := make([]kafka.Message, len(evs))
		for i, ev := range evs {
			v, _ := proto.Marshal(ev)
			msgs[i] = kafka.Message{Topic: p.TopicPrefix() + "feedback.enriched.v1", Key: []byte(ev.Source + "/" + ev.Subject.Id), Value: v}
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	// Three versions per person, each its own response (its own key, so
	// spread over the partitions); the newest is v3.
	base := time.Now().Add(-24 * time.Hour).Truncate(time.Millisecond)
	version := func(i, v int) *feedbackv1.FeedbackEvent {
		return crmtest.Response(fmt.Sprintf("crm-%03d-v%d", i, v), email(i), base.Add(time.Duration(v)*time.Hour), float64((i+v)%11))
	}
	rng := rand.New(rand.NewPCG(12, 34))
	var first []*feedbackv1.FeedbackEvent
	for i := range people {
		first = append(first, version(i, 2), version(i, 3))
	}
	rng.Shuffle(len(first), func(a, b int) { first[a], first[b] = first[b], first[a] })
	produce(first...)

	// Kill sink-webhook while it is writing.
	feedbackWrites := func() (n int) {
		for _, w := range hs.Writes() {
			if w.Properties["closedloop_event_id"] != "" {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(60 * time.Second); feedbackWrites() < killAfter; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d HubSpot writes", feedbackWrites())
		}
	}
	p.Services["sink-webhook"].Kill()
	t.Logf("SIGKILL after %d HubSpot and %d Salesforce writes", feedbackWrites(), len(sf.Writes()))
	// Meanwhile: the old versions (a backfill, a replay) and the
	// unsubscribes, some twice (redelivered), some of people HubSpot
	// never saw (Salesforce has them all).
	var later []*feedbackv1.FeedbackEvent
	for i := range people {
		later = append(later, version(i, 1))
	}
	unsubs := map[string]bool{}
	for i := 0; i < optOuts; i++ {
		ev := crmtest.Unsubscribe(fmt.Sprintf("crm-unsub-%03d", i), email(i))
		unsubs[ev.EventId] = true
		later = append(later, ev)
		if i%10 == 0 {
			later = append(later, ev) // the same unsubscribe again
		}
	}
	for i := 0; i < strangers; i++ {
		ev := crmtest.Unsubscribe(fmt.Sprintf("crm-unsub-x%03d", i), fmt.Sprintf("stranger%03d@example.com", i))
		unsubs[ev.EventId] = true
		later = append(later, ev)
	}
	rng.Shuffle(len(later), func(a, b int) { later[a], later[b] = later[b], later[a] })
	produce(later...)
	rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.Restart(rctx, "sink-webhook"); err != nil {
		t.Fatal(err)
	}
	// v1 replayed once more after everything, by the restarted process.
	var replay []*feedbackv1.FeedbackEvent
	for i := 0; i < people; i += 3 {
		ev := version(i, 1)
		ev.EventId += "-replayed"
		replay = append(replay, ev)
	}
	produce(replay...)

	// Every unsubscribe recorded in the warehouse, once per CRM.
	pool := db(t)
	table := p.Schema() + ".unsubscribe_propagations"
	want := 2 * len(unsubs)
	var rows int
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&rows); err != nil && !strings.Contains(err.Error(), "does not exist") {
			t.Fatal(err)
		}
		if rows >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d propagations in %s", rows, want, table)
		}
	}
	// The contacts converge on their newest version: a contact another
	// batch held (busy) is retried after a backoff, so the last writes may
	// come after the last unsubscribe's record.
	converged := func() bool {
		contacts := hs.Contacts()
		sfByEmail := map[string]any{}
		for _, c := range sf.Records("Contact") {
			sfByEmail[fmt.Sprint(c["Email"])] = c["Closedloop_Event_Id__c"]
		}
		for i := range people {
			newest := version(i, 3).EventId
			if contacts[email(i)].Properties["closedloop_event_id"] != newest || sfByEmail[email(i)] != newest {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(60 * time.Second); !converged() && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
	}
	time.Sleep(time.Second) // late writes (an old version overtaking) would show
	results := map[string]int{}
	r, err := pool.Query(context.Background(), "SELECT destination, result, count(*), max(took) FROM "+table+" GROUP BY 1, 2 ORDER BY 1, 2")
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var dest, res string
		var n int
		var took time.Duration
		if err := r.Scan(&dest, &res, &n, &took); err != nil {
			t.Fatal(err)
		}
		results[dest+"/"+res] += n
		t.Logf("warehouse: %s %s: %d (slowest %s)", dest, res, n, took.Round(time.Millisecond))
	}
	r.Close()
	// Only the strangers are unknown; a kill between the opt-out and its record
	// makes the retry find it already opted out, never opt out twice.
	if results["crm/unknown_contact"] != strangers || results["org/unknown_contact"] != strangers ||
		results["crm/applied"]+results["crm/already_opted_out"] != optOuts || results["org/applied"]+results["org/already_opted_out"] != optOuts {
		t.Fatalf("propagations by destination and result %v: want %d unknown and %d applied per CRM", results, strangers, optOuts)
	}
	perEmail := map[string]int{}
	for _, u := range hs.Unsubscribes() {
		perEmail[u.Email]++
		if u.LegalBasis != "LEGITIMATE_INTEREST_CLIENT" {
			t.Errorf("HubSpot opt-out of %s without the legal basis", u.Email)
		}
	}
	sfOptOuts := map[string]int{}
	for _, wr := range sf.Writes() {
		if wr["HasOptedOutOfEmail"] == true {
			sfOptOuts[fmt.Sprint(wr["Id"])]++
		}
	}
	contacts := hs.Contacts()
	sfByEmail := map[string]salesforcefake.Record{}
	for _, c := range sf.Records("Contact") {
		sfByEmail[fmt.Sprint(c["Email"])] = c
	}
	for i := range people {
		e := email(i)
		newest := version(i, 3).EventId
		if got := contacts[e].Properties["closedloop_event_id"]; got != newest {
			var hist []string
			for _, wr := range hs.Writes() {
				if wr.Email == e {
					hist = append(hist, wr.Properties["closedloop_event_id"]+"@"+wr.At.Format("15:04:05.000"))
				}
			}
			t.Errorf("HubSpot %s holds %s, want the newest %s (writes: %v)", e, got, newest, hist)
		}
		if got := sfByEmail[e]["Closedloop_Event_Id__c"]; got != newest {
			t.Errorf("Salesforce %s holds %v, want the newest %s", e, got, newest)
		}
		optedOut := i < optOuts
		if n := perEmail[e]; (optedOut && n != 1) || (!optedOut && n != 0) {
			t.Errorf("HubSpot opted %s out %d times", e, n)
		}
		if n := sfOptOuts[fmt.Sprint(sfByEmail[e]["Id"])]; (optedOut && n != 1) || (!optedOut && n != 0) {
			t.Errorf("Salesforce opted %s out %d times", e, n)
		}
	}
	if dl := readTopicIfAny(t, p.Brokers, p.TopicPrefix()+"feedback.dlq.sink-webhook.v1"); len(dl) != 0 {
		t.Fatalf("%d dead letters", len(dl))
	}
	if v := metricValue(t, p.OpsAddrs["sink-webhook"], `closedloop_unsubscribe_pending{destination="crm"}`); v != 0 {
		t.Fatalf("closedloop_unsubscribe_pending{destination=crm} = %v after every unsubscribe was recorded", v)
	}

	// The operator's view.
	out, code := ctl(t, p, "ops", "unsubscribes", "--destination", "crm", "--limit", "1000", "-o", "json")
	if code != 0 {
		t.Fatalf("closedloopctl unsubscribes: exit %d: %s", code, out)
	}
	var listed struct {
		Propagations []struct {
			Email, Destination, Result, ReceivedAt, AppliedAt string
		} `json:"propagations"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("closedloopctl unsubscribes -o json: %v\n%s", err, out)
	}
	if len(listed.Propagations) != len(unsubs) {
		t.Fatalf("closedloopctl unsubscribes lists %d for crm, want %d", len(listed.Propagations), len(unsubs))
	}
	table2, _ := ctl(t, p, "ops", "unsubscribes", "--email", "stranger001@example.com")
	if !strings.Contains(table2, "unknown_contact") || !strings.Contains(table2, "TOOK") || strings.Count(table2, "\nstranger001@example.com ") != 2 {
		t.Fatalf("closedloopctl unsubscribes --email:\n%s", table2)
	}
	t.Logf("closedloopctl unsubscribes --email stranger001@example.com:\n%s", table2)
}
