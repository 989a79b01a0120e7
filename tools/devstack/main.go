// Command devstack is `make run`: it builds closedloop and starts it on this
// machine — the dev broker, Redis (redis-server when installed, else an
// embedded Redis-protocol server), PostgreSQL (DATABASE_URL, else a local
// server when installed, else the console sink), every service as its own
// process, and a generator sending signed Delighted webhooks — then shows
// the events arriving until Ctrl-C, when it stops everything in order.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/closedloop/closedloop/libs/grpcserver"
	"github.com/closedloop/closedloop/libs/localinfra"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

type options struct {
	ingressPort int
	brokerPort  int
	rate        time.Duration
	noGenerator bool
	databaseURL string
	adminPort   int
	sink        string
	redis       string
	drop        float64
}

func main() {
	var o options
	flag.IntVar(&o.ingressPort, "ingress-port", 8080, "port of the webhook ingress on 127.0.0.1")
	flag.IntVar(&o.adminPort, "admin-port", 9097, "port of the admin service's gRPC API on 127.0.0.1 (closedloopctl's default; 0: any free port)")
	flag.IntVar(&o.brokerPort, "broker-port", 9092, "port of the dev Kafka broker on 127.0.0.1 (0: any free port)")
	flag.DurationVar(&o.rate, "every", 1500*time.Millisecond, "how often the generator sends a new survey response")
	flag.BoolVar(&o.noGenerator, "no-generator", false, "start the stack without sending webhooks")
	flag.StringVar(&o.sink, "sink", "auto", "auto: the warehouse when PostgreSQL is available, else the console; warehouse; console")
	flag.StringVar(&o.redis, "redis", "auto", "auto: redis-server when installed, else embedded; embedded")
	flag.Float64Var(&o.drop, "drop", 0.1, "share of survey responses whose webhooks the generator drops (the local Delighted API still lists them: reconciliation finds them)")
	flag.Parse()
	if o.sink != "auto" && o.sink != "warehouse" && o.sink != "console" || o.redis != "auto" && o.redis != "embedded" {
		fmt.Fprintln(os.Stderr, "devstack: -sink is auto, warehouse or console; -redis is auto or embedded")
		os.Exit(2)
	}
	o.databaseURL = os.Getenv("DATABASE_URL")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		stop()
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func run(ctx context.Context, o options) error {
	root, err := stack.RepoRoot()
	if err != nil {
		return err
	}
	state := filepath.Join(root, ".devstack")
	logs, err := freshState(state)
	if err != nil {
		return err
	}
	bin := filepath.Join(state, "bin")
	say("closedloop devstack: building the services…")
	if err := stack.Build(ctx, root, bin); err != nil {
		return err
	}

	broker, err := stack.StartBroker(ctx, bin, state, o.brokerPort, 3, nil)
	if err != nil && o.brokerPort != 0 {
		say("  port %d is taken; starting the broker on a free port", o.brokerPort)
		broker, err = stack.StartBroker(ctx, bin, state, 0, 3, nil)
	}
	if err != nil {
		return err
	}
	defer stopped("dev broker", broker.Stop)
	// The topics as production makes them: `admin topics apply` (the code's
	// own list); the services then start without KAFKA_CREATE_TOPICS.
	if _, err := stack.ApplyTopics(ctx, bin, broker.Addrs); err != nil {
		return err
	}
	say("  kafka      %s (dev broker, data in %s; topics made by `admin topics apply`)", broker.Addrs, filepath.Join(state, "kafka"))

	redisAddr, stopRedis, err := startRedis(ctx, state, o.redis == "embedded")
	if err != nil {
		return err
	}
	defer stopRedis()

	dbURL, stopPG, err := startPostgres(ctx, o.databaseURL, o.sink)
	if err != nil {
		return err
	}
	defer stopPG()

	crm, crmURL, err := stack.StartCRM(ctx, bin, logs, "-latency", "15ms")
	if err != nil {
		return err
	}
	defer stopped("crm server", crm.Stop)
	say("  crm        %s (tools/crmserver: accounts by email domain; try %s/v1/accounts/example.com)", crmURL, crmURL)

	slackPort, err := localinfra.FreePort()
	if err != nil {
		return err
	}
	slackAddr := "127.0.0.1:" + strconv.Itoa(slackPort)
	slackSrv := &stack.Process{Name: "slackserver", Bin: filepath.Join(bin, "slackserver"), Args: []string{"-addr", slackAddr},
		Log: filepath.Join(logs, "slackserver.log"), Tee: os.Stdout}
	if err := slackSrv.Start(); err != nil {
		return err
	}
	defer stopped("slack server", slackSrv.Stop)
	if err := stack.WaitReady(ctx, slackSrv, slackAddr, 30*time.Second); err != nil {
		return err
	}
	say("  slack      http://%s (tools/fakes/slack: detractor alerts are printed as ✉ lines)", slackAddr)

	zdPort, err := localinfra.FreePort()
	if err != nil {
		return err
	}
	zdAddr := "127.0.0.1:" + strconv.Itoa(zdPort)
	// The helpdesks send their ticket events to the ingress, whose port is
	// fixed before anything starts; a fake agent solves most tickets.
	ingressPort := o.ingressPort
	if ingressPort == 0 || !portFree(ingressPort) {
		if ingressPort, err = localinfra.FreePort(); err != nil {
			return err
		}
	}
	secret, token := "dev_delighted_api_key", "tok_dev_0123456789abcdefghijklmnop"
	hook := func(source string) string {
		return fmt.Sprintf("http://127.0.0.1:%d/v1/hooks/%s/%s", ingressPort, source, token)
	}
	agent := []string{"-agent-share", "0.7", "-agent-reply-after", "6s", "-agent-solve-after", "15s"}
	zdSrv := &stack.Process{Name: "zendeskserver", Bin: filepath.Join(bin, "zendeskserver"),
		Args: append([]string{"-addr", zdAddr, "-email", "agent@example.com", "-token", "dev-zendesk-token",
			"-webhook-url", hook("zendesk-tickets"), "-webhook-secret", zendeskWebhookSecret}, agent...),
		Log: filepath.Join(logs, "zendeskserver.log"), Tee: os.Stdout}
	if err := zdSrv.Start(); err != nil {
		return err
	}
	defer stopped("zendesk server", zdSrv.Stop)
	if err := stack.WaitReady(ctx, zdSrv, zdAddr, 30*time.Second); err != nil {
		return err
	}
	say("  zendesk    http://%s (tools/fakes/zendesk: a ticket per detractor response is printed as a 🎫 line; its agent solves most: ✅)", zdAddr)

	fdPort, err := localinfra.FreePort()
	if err != nil {
		return err
	}
	fdAddr := "127.0.0.1:" + strconv.Itoa(fdPort)
	fdSrv := &stack.Process{Name: "freshdeskserver", Bin: filepath.Join(bin, "freshdeskserver"),
		Args: append([]string{"-addr", fdAddr, "-key", "dev-freshdesk-key", "-webhook-url", hook("freshdesk-tickets")}, agent...),
		Log:  filepath.Join(logs, "freshdeskserver.log"), Tee: os.Stdout}
	if err := fdSrv.Start(); err != nil {
		return err
	}
	defer stopped("freshdesk server", fdSrv.Stop)
	if err := stack.WaitReady(ctx, fdSrv, fdAddr, 30*time.Second); err != nil {
		return err
	}
	say("  freshdesk  http://%s (tools/fakes/freshdesk: tickets for enterprise detractors, printed as 🎫 lines)", fdAddr)

	dlPort, err := localinfra.FreePort()
	if err != nil {
		return err
	}
	dlAddr := "127.0.0.1:" + strconv.Itoa(dlPort)
	dlSrv := &stack.Process{Name: "delightedserver", Bin: filepath.Join(bin, "delightedserver"),
		Args: []string{"-addr", dlAddr, "-key", "dev-delighted-key", "-per-second", "5"},
		Log:  filepath.Join(logs, "delightedserver.log"), Tee: os.Stdout}
	if err := dlSrv.Start(); err != nil {
		return err
	}
	defer stopped("delighted server", dlSrv.Stop)
	if err := stack.WaitReady(ctx, dlSrv, dlAddr, 30*time.Second); err != nil {
		return err
	}
	say("  delighted  http://%s/v1 (tools/fakes/delighted: the API lists every generated response; reconciliation every 30 s finds the dropped ones: ⟲ lines)", dlAddr)

	// The CRMs: HubSpot upserts whoever answers; the Salesforce org has the
	// respondents as Contacts (the last two as Leads) beforehand.
	hsAddr, hsSrv, err := startFake(ctx, bin, logs, "hubspotserver", "-token", "dev-hubspot-token")
	if err != nil {
		return err
	}
	defer stopped("hubspot server", hsSrv.Stop)
	say("  hubspot    http://%s (tools/fakes/hubspot: contacts get the feedback properties: 👤 lines; opt-outs: 🚫; %s/_fake/contacts)", hsAddr, "http://"+hsAddr)
	emails := delightedgen.Emails()
	sfAddr, sfSrv, err := startFake(ctx, bin, logs, "salesforceserver", "-client-id", "dev-sf-client", "-client-secret", "dev-sf-secret",
		"-contacts", strings.Join(emails[:len(emails)-2], ","), "-leads", strings.Join(emails[len(emails)-2:], ","))
	if err != nil {
		return err
	}
	defer stopped("salesforce server", sfSrv.Stop)
	say("  salesforce http://%s (tools/fakes/salesforce: Contacts and Leads get the feedback fields: 👤; HasOptedOutOfEmail: 🚫; %s/_fake/records?type=Contact)", sfAddr, "http://"+sfAddr)

	p := &stack.Pipeline{BinDir: bin, Dir: logs,
		DelightedAPIYAML: "    api:\n      base_url: http://" + dlAddr + "/v1\n      key: env:DELIGHTED_API_KEY\n" +
			"      reconcile: {every: 30s, window: 1h, settle: 10s}\n", AdminPort: o.adminPort, Brokers: broker.Addrs, Redis: redisAddr, TopicsMade: true,
		DatabaseURL: dbURL, Secret: secret, Token: token, IngressPort: ingressPort, Env: []string{"LOG_LEVEL=info"}, CRMURL: crmURL,
		SourcesYAML: "  - name: zendesk-tickets\n    provider: zendesk\n    secrets: [env:ZENDESK_WEBHOOK_SECRET]\n" +
			"    ingest_tokens: [env:CLOSEDLOOP_DEV_INGEST_TOKEN]\n" +
			"  - name: freshdesk-tickets\n    provider: freshdesk\n    ingest_tokens: [env:CLOSEDLOOP_DEV_INGEST_TOKEN]\n",
		AdminTokens: map[string]string{"dev": "operator", "viewer": "viewer"},
		SinksYAML: "  slack:\n    channels:\n      - name: cx-alerts\n        webhook_url: env:SLACK_WEBHOOK_URL\n" +
			"  zendesk:\n    accounts:\n      - name: support\n        url: http://" + zdAddr + "\n        email: agent@example.com\n" +
			"        api_token: env:ZENDESK_API_TOKEN\n        tags: [nps]\n" +
			"  freshdesk:\n    accounts:\n      - name: enterprise-desk\n        url: http://" + fdAddr + "\n        api_key: env:FRESHDESK_API_KEY\n" +
			"        when: 'event.segment == Segment.SEGMENT_DETRACTOR && event.enrichment.lane == Lane.LANE_PRIORITY'\n" +
			"  hubspot:\n    accounts:\n      - name: hubspot\n        url: http://" + hsAddr + "\n        token: env:HUBSPOT_TOKEN\n" +
			"        unsubscribe:\n          subscription: Marketing Information\n          legal_basis: LEGITIMATE_INTEREST_CLIENT\n" +
			"          legal_basis_explanation: The person unsubscribed in the survey tool\n" +
			"  salesforce:\n    accounts:\n      - name: salesforce\n        url: http://" + sfAddr + "\n        objects: [Contact, Lead]\n" +
			"        auth:\n          flow: client_credentials\n          client_id: dev-sf-client\n          client_secret: env:SALESFORCE_CLIENT_SECRET\n"}
	p.Env = append(p.Env, "DELIGHTED_API_KEY=dev-delighted-key", "SLACK_WEBHOOK_URL=http://"+slackAddr+"/services/T0DEV/B0DEV/devwebhooksecret", "ZENDESK_API_TOKEN=dev-zendesk-token",
		"FRESHDESK_API_KEY=dev-freshdesk-key", "ZENDESK_WEBHOOK_SECRET="+zendeskWebhookSecret,
		"HUBSPOT_TOKEN=dev-hubspot-token", "SALESFORCE_CLIENT_SECRET=dev-sf-secret")
	sinkName := "sink-warehouse"
	if dbURL == "" {
		sinkName = "sink-console"
	}
	p.Run = []string{sinkName, "sink-webhook", "enricher", "normalizer", "ingress", "admin"}
	if o.adminPort > 0 && !portFree(o.adminPort) {
		say("  port %d is taken; the admin service listens on a free port", o.adminPort)
		p.AdminPort = 0
	}
	say("  services   starting (logs in %s; earlier runs' beside it)…", p.Dir)
	if err := p.Start(ctx); err != nil {
		_ = p.Stop()
		return err
	}
	defer stopped("services", p.Stop)

	say("")
	say("Ready. Webhooks go to")
	say("  POST %s", p.IngressURL)
	say("  signed with X-Delighted-Webhook-Signature: sha256=HMAC-SHA256(%q, body)", secret)
	say("Metrics and health: http://%s/metrics, /readyz (ingress; other services in %s)", p.OpsAddrs["ingress"], p.Dir)
	if dbURL != "" {
		say("Rows:  psql '%s' -c 'SELECT _cl_received_at, kind, subject_id, score, segment, comment FROM %s.feedback_latest'", dbURL, p.Schema())
	}
	var grpcAddrs []string
	for _, name := range p.Run {
		grpcAddrs = append(grpcAddrs, name+" "+p.GRPCAddrs[name])
	}
	say("gRPC (service token %s): %s", p.ServiceToken(), strings.Join(grpcAddrs, ", "))
	say("Operate it (docs/operations.md):")
	say("  export CLOSEDLOOP_ADMIN_ADDR=%s CLOSEDLOOP_ADMIN_TOKEN=%s", p.AdminAddr(), p.AdminToken("dev"))
	say("  %s status      (or: go run ./services/admin/cmd/closedloopctl status)", filepath.Join(bin, "closedloopctl"))
	say("  %s unsubscribes   each opt-out's propagation to HubSpot and Salesforce, and the time it took", filepath.Join(bin, "closedloopctl"))
	say("  %s top         a live view in another terminal: webhooks/s, each stage's rate, lag and freshness, breakers (q quits)", filepath.Join(bin, "closedloopctl"))
	say("Ctrl-C stops everything.")
	say("")

	if !o.noGenerator {
		go generate(ctx, p, secret, o.rate, "http://"+dlAddr, o.drop)
	}
	if dbURL != "" {
		go showLoop(ctx, p)
		go showUnsubscribes(ctx, dbURL, p.Schema())
		return showRows(ctx, dbURL, p.Schema())
	}
	return followConsole(ctx, filepath.Join(p.Dir, "sink-console.log"))
}

// zendeskWebhookSecret is the signing secret of the local Zendesk's webhook.
const zendeskWebhookSecret = "dev-zendesk-webhook-signing-secret"

func stopped(what string, fn func() error) {
	if err := fn(); err != nil {
		say("stopping %s: %v", what, err)
		return
	}
	say("stopped %s", what)
}

func startRedis(ctx context.Context, dir string, embedded bool) (string, func(), error) {
	why := "asked for with -redis embedded"
	if !embedded {
		p, err := localinfra.StartRedis(ctx, dir)
		if err == nil {
			say("  redis      %s (redis-server)", p.Addr)
			return p.Addr, func() { p.Stop(); say("stopped redis") }, nil
		}
		if !errors.Is(err, localinfra.ErrNotInstalled) {
			return "", nil, err
		}
		why = "redis-server is not installed"
	}
	m, err := miniredis.Run()
	if err != nil {
		return "", nil, err
	}
	say("  redis      %s (embedded: %s)", m.Addr(), why)
	return m.Addr(), func() { m.Close(); say("stopped redis") }, nil
}

func startPostgres(ctx context.Context, url, sink string) (string, func(), error) {
	if sink == "console" {
		say("  postgres   not used (-sink console): events go to the console sink")
		return "", func() {}, nil
	}
	if url != "" {
		pool, err := pgxpool.New(ctx, url)
		if err == nil {
			err = pool.Ping(ctx)
			pool.Close()
		}
		if err != nil {
			return "", nil, fmt.Errorf("DATABASE_URL is set but PostgreSQL is not reachable: %w", err)
		}
		say("  postgres   DATABASE_URL")
		return url, func() {}, nil
	}
	pg, err := localinfra.StartPostgres(ctx)
	if errors.Is(err, localinfra.ErrNotInstalled) && sink == "auto" {
		say("  postgres   not installed and DATABASE_URL not set: events go to the console sink instead of the warehouse")
		return "", func() {}, nil
	}
	if err != nil {
		return "", nil, err
	}
	say("  postgres   %s (local server in a temporary directory)", pg.Addr)
	return pg.URL, func() { pg.Stop(); say("stopped postgres") }, nil
}

// generate sends a new response every interval: the created event, its
// update with the comment a moment later, now and then an unsubscribe and a
// duplicate delivery, as Delighted does.
func generate(ctx context.Context, p *stack.Pipeline, secret string, every time.Duration, delightedAPI string, drop float64) {
	gen := delightedgen.New([]byte(secret), uint64(time.Now().UnixNano()))
	client := &http.Client{Timeout: 5 * time.Second}
	// The local Delighted API lists what the survey tool holds: every
	// response, in its latest state, whether its webhooks are sent or not.
	publish := func(w delightedgen.Webhook) {
		if data, err := w.Data(); err == nil {
			if b, err := json.Marshal(data); err == nil {
				if resp, err := client.Post(delightedAPI+"/_fake/responses", "application/json", bytes.NewReader(b)); err == nil {
					_ = resp.Body.Close()
				}
			}
		}
	}
	send := func(w delightedgen.Webhook, note string) {
		code, err := delightedgen.Send(ctx, client, p.IngressURL, w)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			say("→ %-26s %s: %v", w.EventType, w.Subject, err)
			return
		}
		say("→ %-26s subject %-7s %d %s%s", w.EventType, w.Subject, code, http.StatusText(code), note)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		created, updated := gen.Response()
		publish(created)
		if rand.Float64() < drop {
			say("✗ %-26s subject %-7s webhooks dropped by the provider (never sent; reconciliation will find the response)", created.EventType, created.Subject)
			go func() {
				select {
				case <-ctx.Done():
				case <-time.After(every / 2):
					publish(updated)
				}
			}()
			continue
		}
		send(created, "")
		if rand.IntN(5) == 0 {
			send(created, "  (duplicate delivery)")
		}
		go func() {
			select {
			case <-ctx.Done():
			case <-time.After(every / 2):
				publish(updated)
				send(updated, "")
			}
		}()
		if rand.IntN(8) == 0 {
			u := gen.Unsubscribe()
			send(u, "")
		}
	}
}

// showRows prints every new warehouse row with its end-to-end latency.
func showRows(ctx context.Context, url, schema string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(300 * time.Millisecond):
		}
		rows, err := pool.Query(ctx, `SELECT _cl_row_id, kind, subject_id, coalesce(score::text, '-'), coalesce(segment, ''), coalesce(comment, ''),
			coalesce(lane, ''), array_to_string(labels, ','),
			coalesce(event->'enrichment'->'lookups'->'account'->'fields'->>'account_name', event->'enrichment'->'lookups'->'account'->>'status', ''),
			coalesce(event->'enrichment'->'lookups'->'account'->'fields'->>'tier', ''),
			extract(epoch FROM _cl_batched_at - _cl_received_at) * 1000,
			coalesce(ticket_system, ''), coalesce(ticket_stage, ''), coalesce(response_key, ''), coalesce(event->>'origin', ''),
			CASE WHEN ticket_stage IN ('solved', 'closed') THEN (SELECT extract(epoch FROM min(l.time_to_solved))
				FROM `+schema+`.loop_closure_since(now() - interval '1 day') l WHERE l.response_key = e.response_key) END
			FROM `+schema+`.feedback_events e WHERE _cl_row_id > $1 ORDER BY _cl_row_id`, last)
		if err != nil {
			continue // not migrated yet, or shutting down
		}
		for rows.Next() {
			var id int64
			var kind, subject, score, segment, comment, lane, labels, account, tier, system, stage, key, origin string
			var ms float64
			var closedAfter *float64
			if rows.Scan(&id, &kind, &subject, &score, &segment, &comment, &lane, &labels, &account, &tier, &ms, &system, &stage, &key, &origin, &closedAfter) != nil {
				continue
			}
			last = id
			if kind == "follow_up" {
				loop := ""
				if closedAfter != nil {
					loop = fmt.Sprintf("  loop closed %s after the detractor", (time.Duration(*closedAfter) * time.Second).Round(time.Second))
				}
				say("  ↺ row %-5d %-9s ticket #%-4s %-13s for %s%s", id, system, subject, stage, key, loop)
				continue
			}
			arrow, via := "←", fmt.Sprintf("webhook→row %.0f ms", ms)
			if origin != "" {
				arrow, via = "⟲", "found by "+origin+": its webhook never came"
			}
			say("  %s row %-5d %-17s %-8s score %-3s %-9s lane %-8s %-9s %-22s %-30.30q %s",
				arrow, id, kind, subject, score, segment, lane, labels, strings.TrimSpace(account+" "+tier), comment, via)
		}
		rows.Close()
	}
}

// startFake starts a vendor fake's server on a free port, its output
// shown, and waits until it answers.
func startFake(ctx context.Context, bin, logs, name string, args ...string) (string, *stack.Process, error) {
	port, err := localinfra.FreePort()
	if err != nil {
		return "", nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	proc := &stack.Process{Name: name, Bin: filepath.Join(bin, name), Args: append([]string{"-addr", addr}, args...),
		Log: filepath.Join(logs, name+".log"), Tee: os.Stdout}
	if err := proc.Start(); err != nil {
		return "", nil, err
	}
	if err := stack.WaitReady(ctx, proc, addr, 30*time.Second); err != nil {
		_ = proc.Stop()
		return "", nil, err
	}
	return addr, proc, nil
}

// showUnsubscribes prints each unsubscribe's propagation to each CRM as
// the warehouse records it.
func showUnsubscribes(ctx context.Context, url, schema string) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return
	}
	defer pool.Close()
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		rows, err := pool.Query(ctx, `SELECT _cl_recorded_at, email, destination, kind, result, extract(epoch FROM took) * 1000
			FROM `+schema+`.unsubscribe_propagations WHERE _cl_recorded_at > $1 ORDER BY _cl_recorded_at`, since)
		if err != nil {
			continue // not migrated yet
		}
		for rows.Next() {
			var at time.Time
			var email, dest, kind, result string
			var ms float64
			if rows.Scan(&at, &email, &dest, &kind, &result, &ms) == nil {
				since = at
				say("  ⊘ unsubscribe %-26s → %-10s (%s) %-17s %.0f ms after it was received", email, dest, kind, result, ms)
			}
		}
		rows.Close()
	}
}

// showLoop prints the loop closure the warehouse sink reports, every 30 s
// when it changed.
func showLoop(ctx context.Context, p *stack.Pipeline) {
	conn, err := grpc.NewClient(p.GRPCAddrs["sink-warehouse"], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(grpcserver.ServiceCredentials{Token: p.ServiceToken(), Service: "devstack"}))
	if err != nil {
		return
	}
	defer conn.Close()
	client := adminv1.NewServiceAdminServiceClient(conn)
	var shown string
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(30 * time.Second):
		}
		st, err := client.GetStatus(ctx, &adminv1.GetStatusRequest{})
		lc := st.GetLoopClosure()
		if err != nil || lc == nil || lc.Detractors == 0 {
			continue
		}
		line := fmt.Sprintf("  ◎ loop closure, last 24h: %d detractors, %d with a ticket, %d replied, %d solved; median to solved %s",
			lc.Detractors, lc.Ticketed, lc.Replied, lc.Solved, (time.Duration(lc.MedianToSolvedSeconds) * time.Second).Round(time.Second))
		if line != shown {
			say("%s", line)
			shown = line
		}
	}
}

// followConsole prints the event lines the console sink writes.
func followConsole(ctx context.Context, path string) error {
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for ctx.Err() == nil {
		line, err := r.ReadString('\n')
		if errors.Is(err, io.EOF) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "{") { // JSON lines are the sink's own logs
			fmt.Print("  ← ", line)
		}
	}
	return nil
}

// keptRuns is how many runs' logs .devstack/logs keeps.
const keptRuns = 5

// freshState empties the state directory of the last run (broker data,
// binaries) but keeps the logs of the last runs: this run's go to
// .devstack/logs/<start time>/, which .devstack/logs/latest points at.
func freshState(state string) (string, error) {
	entries, err := os.ReadDir(state)
	if err != nil && !os.IsNotExist(err) {
		return "", err
	}
	for _, e := range entries {
		if e.Name() != "logs" {
			if err := os.RemoveAll(filepath.Join(state, e.Name())); err != nil {
				return "", err
			}
		}
	}
	root := filepath.Join(state, "logs")
	runs, _ := filepath.Glob(filepath.Join(root, "20*"))
	sort.Strings(runs)
	for len(runs) >= keptRuns {
		_ = os.RemoveAll(runs[0])
		runs = runs[1:]
	}
	// Files of a run before this layout lie loose in logs/: keep them as one.
	loose, _ := os.ReadDir(root)
	for _, f := range loose {
		if f.Type().IsRegular() {
			old := filepath.Join(root, "earlier")
			_ = os.MkdirAll(old, 0o755)
			_ = os.Rename(filepath.Join(root, f.Name()), filepath.Join(old, f.Name()))
		}
	}
	dir := filepath.Join(root, time.Now().Format("20060102-150405"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	latest := filepath.Join(root, "latest")
	_ = os.Remove(latest)
	_ = os.Symlink(filepath.Base(dir), latest)
	return dir, nil
}

// portFree reports whether 127.0.0.1:port can be listened on now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
