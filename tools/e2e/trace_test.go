package e2e

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	freshdeskfake "github.com/closedloop/closedloop/tools/fakes/freshdesk"
	slackfake "github.com/closedloop/closedloop/tools/fakes/slack"
	zendeskfake "github.com/closedloop/closedloop/tools/fakes/zendesk"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
)

// One webhook makes one trace, exported over OTLP by every service (as a
// local OTLP receiver sees it): the ingress's server span, a send span per
// produce and a process span per consume at every stage, and a deliver span
// at each of the five destinations (the warehouse, a webhook endpoint, a
// Slack channel, Zendesk, Freshdesk), each linked to the process spans of
// the events its call carried. Every span's parent is in the trace: nothing
// starts a trace of its own on the way. The spans follow the messaging
// conventions (operation names, partition ids as strings).
func TestOneTraceCoversEveryHopToEveryDestination(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	spans := newSpanSink(t)
	rcv := newWebhookReceiver(t, "whsec_"+base64.StdEncoding.EncodeToString([]byte("e2e-webhook-signing-key-32-bytes")))
	slack := slackfake.New()
	slackSrv := httptest.NewServer(slack)
	t.Cleanup(slackSrv.Close)
	hook := slackSrv.URL + slack.AddWebhook("C0TRACE")
	zd := zendeskfake.New()
	zd.AddAPIToken("agent@example.com", "zd-trace-token-0123456789")
	zdSrv := httptest.NewServer(zd)
	t.Cleanup(zdSrv.Close)
	fd := freshdeskfake.New()
	fd.AddAPIKey("fd-trace-key-0123456789")
	fdSrv := httptest.NewServer(fd)
	t.Cleanup(fdSrv.Close)

	p := pipelineSpec("e2e_trace", infra.broker.Addrs, infra.redis.Addr,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+spans.URL, "OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_METRICS_EXPORTER=none",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=e2e",
		"E2E_WEBHOOK_SECRET="+rcv.secret, "E2E_SLACK_HOOK="+hook, "E2E_ZENDESK_TOKEN=zd-trace-token-0123456789", "E2E_FRESHDESK_KEY=fd-trace-key-0123456789")
	p.Run = []string{"sink-warehouse", "sink-webhook", "enricher", "normalizer", "ingress"}
	p.SinksYAML = "  webhook:\n    endpoints:\n      - name: receiver\n        url: " + rcv.URL + "\n        secret: env:E2E_WEBHOOK_SECRET\n        timeout: 2s\n" +
		"  slack:\n    channels:\n      - name: cx-alerts\n        webhook_url: env:E2E_SLACK_HOOK\n        when: 'true'\n        timeout: 2s\n" +
		"  zendesk:\n    accounts:\n      - name: support\n        url: " + zdSrv.URL + "\n        email: agent@example.com\n        api_token: env:E2E_ZENDESK_TOKEN\n        when: 'true'\n        timeout: 2s\n" +
		"  freshdesk:\n    accounts:\n      - name: helpdesk\n        url: " + fdSrv.URL + "\n        api_key: env:E2E_FRESHDESK_KEY\n        when: 'true'\n        timeout: 2s\n"
	startPipeline(t, p)

	gen := delightedgen.New([]byte(p.Secret), 7)
	created, _ := gen.Response()
	send(t, p, created, http.StatusAccepted)
	pool := db(t)
	waitRows(t, pool, p.Schema(), map[string]bool{created.EventID: true}, 60*time.Second)
	var traceID string
	if err := pool.QueryRow(context.Background(), `SELECT trace_id FROM `+p.Schema()+`.feedback_events WHERE event_id = $1`, created.EventID).Scan(&traceID); err != nil {
		t.Fatal(err)
	}

	raw, normalized := p.TopicPrefix()+"feedback.raw.v1", p.TopicPrefix()+"feedback.normalized.v1"
	enriched := []string{p.TopicPrefix() + "feedback.enriched.v1", p.TopicPrefix() + "feedback.enriched.priority.v1"}
	want := map[string][]string{
		"ingress":        {"POST /v1/hooks/{source}/{token}", "send " + raw},
		"normalizer":     {"process " + raw, "send " + normalized},
		"enricher":       {"process " + normalized, "send <enriched>"},
		"sink-warehouse": {"process <enriched>", "deliver warehouse"},
		"sink-webhook":   {"process <enriched>", "deliver receiver", "deliver cx-alerts", "deliver support", "deliver helpdesk"},
	}
	has := func(got []spanRec, svc, name string) bool {
		for _, s := range got {
			if s.Service != svc {
				continue
			}
			if s.Name == name || strings.Contains(name, "<enriched>") && slices.ContainsFunc(enriched, func(tp string) bool { return s.Name == strings.Replace(name, "<enriched>", tp, 1) }) {
				return true
			}
		}
		return false
	}
	var got []spanRec
	missing := []string{"(none yet)"}
	for deadline := time.Now().Add(30 * time.Second); len(missing) > 0; {
		if time.Now().After(deadline) {
			names := []string{}
			for _, s := range got {
				names = append(names, s.Service+": "+s.Name)
			}
			sort.Strings(names)
			t.Fatalf("trace %s lacks %v; it has:\n  %s", traceID, missing, strings.Join(names, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
		got = spans.spans(traceID)
		missing = missing[:0]
		for svc, names := range want {
			for _, n := range names {
				if !has(got, svc, n) {
					missing = append(missing, svc+": "+n)
				}
			}
		}
	}

	ids := map[string]spanRec{}
	for _, s := range got {
		ids[s.ID] = s
	}
	roots := 0
	for _, s := range got {
		if s.Parent == "" || s.Parent == "0000000000000000" {
			roots++
			if s.Service != "ingress" {
				t.Errorf("%s's span %q starts the trace: the trace context was lost on the way", s.Service, s.Name)
			}
			continue
		}
		if _, ok := ids[s.Parent]; !ok {
			t.Errorf("%s's span %q has a parent (%s) that is not in the trace", s.Service, s.Name, s.Parent)
		}
		switch {
		case strings.HasPrefix(s.Name, "process ") || strings.HasPrefix(s.Name, "send "):
			op := strings.Fields(s.Name)[0]
			if s.Attrs["messaging.operation.name"] != op || s.Attrs["messaging.system"] != "kafka" || s.Attrs["messaging.destination.name"] != strings.Fields(s.Name)[1] {
				t.Errorf("%s's span %q: messaging attributes %v", s.Service, s.Name, s.Attrs)
			}
			if op == "process" && (s.Attrs["messaging.destination.partition.id"] == "" || s.Attrs["messaging.consumer.group.name"] == "") {
				t.Errorf("%s's span %q: no partition id or group: %v", s.Service, s.Name, s.Attrs)
			}
		case strings.HasPrefix(s.Name, "deliver "):
			linked := false
			for _, l := range s.Links {
				if ls, ok := ids[l]; ok && strings.HasPrefix(ls.Name, "process ") && ls.Service == s.Service {
					linked = true
				}
			}
			if !linked {
				t.Errorf("%s's span %q links to no process span of the event (links %v)", s.Service, s.Name, s.Links)
			}
		}
	}
	if roots != 1 {
		t.Errorf("%d root spans, want the ingress's only", roots)
	}

	// The freshness series the SLO rules read exist, with the bucket they
	// name (le="60"), per stage and destination.
	for svc, series := range map[string][]string{
		"normalizer":     {`closedloop_freshness_seconds_bucket{le="60",stage="normalizer"}`},
		"enricher":       {`closedloop_freshness_seconds_bucket{le="60",stage="enricher"}`},
		"sink-warehouse": {`closedloop_freshness_seconds_bucket{destination="warehouse",le="60",stage="sink-warehouse"}`},
		"sink-webhook": {`closedloop_freshness_seconds_bucket{destination="support",le="60",stage="sink-webhook"}`,
			`closedloop_sink_delivery_duration_seconds_bucket{destination="helpdesk",le="0.1",sink="sink-webhook"}`},
		"ingress": {`http_server_request_duration_seconds_bucket{http_request_method="POST",http_response_status_code="202",closedloop_source="delighted",le="0.01"}`},
	} {
		resp, err := http.Get("http://" + p.OpsAddrs[svc] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		for _, s := range series {
			if !seriesPresent(string(b), s) {
				t.Errorf("%s /metrics has no %s", svc, s)
			}
		}
	}
}

// seriesPresent reports whether the exposition has a series with the name
// and at least the labels of want (name{k="v",...}).
func seriesPresent(exposition, want string) bool {
	_, ok := seriesValue(exposition, want)
	return ok
}

// seriesValue is the value of the first series of the exposition with
// the name and at least the labels of want (name{k="v",...}).
func seriesValue(exposition, want string) (float64, bool) {
	name, labels, _ := strings.Cut(strings.TrimSuffix(want, "}"), "{")
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		have, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		for _, l := range strings.Split(labels, ",") {
			ok = ok && (l == "" || strings.Contains(","+have+",", ","+l+","))
		}
		if ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			return v, err == nil
		}
	}
	return 0, false
}
