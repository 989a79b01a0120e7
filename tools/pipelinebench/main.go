// Command pipelinebench measures the whole pipeline as its users see it:
// signed webhooks in at the ingress, rows out in the warehouse. It starts
// the dev broker, redis-server, PostgreSQL and every service as its own
// process, then runs two phases:
//
//  1. latency: webhooks at a steady rate (-rate per second for -duration);
//     for every row, webhook→row = the row's _cl_batched_at (the INSERT's
//     transaction time) minus its _cl_received_at (the ingress's receipt),
//     both from this machine's clock; p50/p90/p99/max are printed, and p50/p99
//     of each hop (→normalized_at, →enrichment.enriched_at, →the INSERT) from
//     the event's own timestamps.
//
//     Every event also goes to a webhook destination (sink-webhook, one
//     endpoint) whose receiver runs in this process: webhook→delivery is the
//     receipt time minus the event's received_at. The rate achieved and this
//     process's CPU (load generator and receiver) are printed.
//
//     With -helpdesks (default), sink-webhook also opens a Zendesk and a
//     Freshdesk ticket for every detractor in local fakes running in this
//     process (their plan limits raised out of the way: the pipeline is
//     measured, not the vendor's quota): webhook→ticket is the ticket's
//     creation time minus the response's received_at.
//
//     With -crm (default), sink-webhook also updates a HubSpot contact per
//     response (each response its own respondent; local fake, limits raised)
//     through batch upserts of up to 100.
//
//  2. drain: -burst webhooks sent as fast as -c senders can; the time from
//     the first send to the last row gives the pipeline's rows/s, to the
//     last ticket each helpdesk's tickets/s, and to the last contact the
//     CRM's events/s.
//
// Each service runs with GOMAXPROCS=1 unless -gomaxprocs says otherwise: the
// Helm chart sets GOMAXPROCS from each service's CPU request, and every
// default request is at most one CPU, so this is how the services run in a
// cluster (on this machine's cores, Go would start one processor per core
// in each process).
//
//	go run ./tools/pipelinebench -rate 1000 -duration 15s -burst 20000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/rawhttp"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// serviceEnv is -service-env: "service:NAME=value" settings for one service each.
var serviceEnv stack.EnvFlags

func main() {
	rate := flag.Int("rate", 1000, "webhooks per second in the latency phase")
	lowRate := flag.Int("low-rate", 100, "webhooks per second in the second, low-rate phase (0: skip it)")
	idle := flag.Duration("idle", 10*time.Second, "measure each process's CPU with no traffic for this long first (0: skip)")
	duration := flag.Duration("duration", 15*time.Second, "length of the latency phase")
	burst := flag.Int("burst", 20000, "webhooks in the drain phase (0: skip it)")
	conc := flag.Int("c", 32, "concurrent senders in the drain phase")
	partitions := flag.Int("partitions", 6, "partitions per topic")
	withWebhook := flag.Bool("webhook", true, "also deliver every event to a webhook destination (sink-webhook) and measure it")
	withHelpdesks := flag.Bool("helpdesks", true, "also open Zendesk and Freshdesk tickets for the detractors (sink-webhook, local fakes) and measure them")
	withCRM := flag.Bool("crm", true, "also update a HubSpot contact per response (sink-webhook, local fake; batch upserts of 100) and measure it")
	profile := flag.String("profile", "", "write a CPU profile of these services (comma-separated) during each phase to /tmp/pipelinebench.<service>.<rate or drain>.pprof (sets OPS_PPROF)")
	gomaxprocs := flag.Int("gomaxprocs", 1, "each service's GOMAXPROCS, as the Helm chart sets it from the service's CPU request (1 for every default request); 0: Go's own default, one per core (-env GOMAXPROCS=… overrides either)")
	var env stack.EnvFlags
	flag.Var(&env, "env", "NAME=value added to every service's environment (repeatable)")
	flag.Var(&serviceEnv, "service-env", "service:NAME=value added to one service's environment, after -env (repeatable), e.g. normalizer:CONSUMER_LINGER=5ms")
	flag.Parse()
	fmt.Printf("host: %s\n", stack.MeasureHost(time.Second))
	if *profile != "" {
		profileServices = strings.Split(*profile, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *gomaxprocs < 0 {
		fmt.Fprintln(os.Stderr, "pipelinebench: -gomaxprocs must be 0 (Go's default) or more")
		os.Exit(2)
	}
	if *gomaxprocs > 0 {
		// First, so that a GOMAXPROCS in -env (later in the environment) wins.
		env = append([]string{fmt.Sprintf("GOMAXPROCS=%d", *gomaxprocs)}, env...)
	}
	fmt.Printf("each service's GOMAXPROCS: %s\n", gomaxprocsOf(env))
	fmt.Printf("each service's environment, as the image's: %s\n", strings.Join(stack.ImageEnv, " "))
	if err := run(ctx, *rate, *lowRate, *duration, *idle, *burst, *conc, *partitions, *withWebhook, *withHelpdesks, *withCRM, env); err != nil {
		fmt.Fprintln(os.Stderr, "pipelinebench:", err)
		os.Exit(1)
	}
}

// gomaxprocsOf describes the GOMAXPROCS the services get from env.
func gomaxprocsOf(env []string) string {
	for _, kv := range slices.Backward(env) {
		if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
			return v
		}
	}
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		return v + " (inherited from this process's environment)"
	}
	return fmt.Sprintf("Go's default (%d, one per core)", runtime.NumCPU())
}

func run(ctx context.Context, rate, lowRate int, duration, idle time.Duration, burst, conc, partitions int, withWebhook, withHelpdesks, withCRM bool, env []string) error {
	dir, bin, cleanup, err := stack.Workspace(ctx, "pipelinebench")
	if err != nil {
		return err
	}
	defer cleanup()
	infra, err := stack.StartInfra(ctx, bin, dir, partitions, kafkaio.NewTopics("").All())
	if err != nil {
		return err
	}
	defer infra.Stop()
	broker, redis, pg := infra.Broker, infra.Redis, infra.Postgres
	rcv := newReceiver()
	rsrv := &http.Server{Handler: rcv, ReadHeaderTimeout: 5 * time.Second}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = rsrv.Serve(lis) }()
	defer rsrv.Close()
	p := &stack.Pipeline{BinDir: bin, Dir: filepath.Join(dir, "logs"), Brokers: broker.Addrs, Redis: redis.Addr,
		DatabaseURL: pg.URL, Secret: "dl_bench_secret", Token: delightedgen.IngestToken(),
		Env: append([]string{"LOG_LEVEL=warn", "BENCH_WEBHOOK_SECRET=whsec_YmVuY2gtd2ViaG9vay1zaWduaW5nLWtleS0zMi1ieXRlcw=="}, env...),
		Run: []string{"sink-warehouse", "sink-webhook", "enricher", "normalizer", "ingress"},
		SinksYAML: "  webhook:\n    endpoints:\n      - name: bench\n        url: http://" + lis.Addr().String() + "/hook\n" +
			"        secret: env:BENCH_WEBHOOK_SECRET\n        timeout: 5s\n"}
	services := []string{"ingress", "normalizer", "enricher", "sink-warehouse", "sink-webhook"}
	if !withWebhook {
		p.SinksYAML = ""
	}
	var desks *helpdesks
	if withHelpdesks {
		desks = startHelpdesks()
		defer desks.close()
		p.SinksYAML += desks.yaml
		p.Env = append(p.Env, desks.env...)
	}
	var crmd *crmDest
	if withCRM {
		crmd = startCRM()
		defer crmd.close()
		p.SinksYAML += crmd.yaml
		p.Env = append(p.Env, crmd.env...)
	}
	if !withWebhook && !withHelpdesks && !withCRM {
		p.Run, services = []string{"sink-warehouse", "enricher", "normalizer", "ingress"}, services[:4]
	}
	if len(profileServices) > 0 {
		for _, name := range profileServices {
			if !slices.Contains(services, name) {
				return fmt.Errorf("-profile %s: not a service of this run (%s)", name, strings.Join(services, ", "))
			}
		}
		p.Env = append(p.Env, "OPS_PPROF=true")
	}
	for _, kv := range serviceEnv {
		name, setting, ok := strings.Cut(kv, ":")
		if !ok || !slices.Contains(services, name) || !strings.Contains(setting, "=") {
			return fmt.Errorf("-service-env %q: want service:NAME=value with a service of this run (%s)", kv, strings.Join(services, ", "))
		}
		if p.ServiceEnv == nil {
			p.ServiceEnv = map[string][]string{}
		}
		p.ServiceEnv[name] = append(p.ServiceEnv[name], setting)
	}
	if err := p.Start(ctx); err != nil {
		_ = p.Stop()
		return err
	}
	defer p.Stop()
	pool, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	rows := &stack.Rows{Pool: pool} // polls without scanning the table
	gen := delightedgen.New([]byte(p.Secret), uint64(time.Now().UnixNano()))
	gen.Population = 1 << 30 // each response its own person: the CRM writes a contact per response

	acct := newAccount(p, infra, services)
	if idle > 0 {
		time.Sleep(3 * time.Second) // start-up work done
		if name, share := acct.idle(idle); share >= 1 {
			fmt.Printf("IDLE TARGET MISSED: %s used %.2f %% of a core with no traffic (target < 1 %%)\n", name, share)
		}
	}

	// Phase 1: a steady rate, with every destination's latency; phase 2: a
	// low rate (fixed per-batch costs show there).
	u, err := url.Parse(p.IngressURL)
	if err != nil {
		return err
	}
	sp := &sender{ctx: ctx, gen: gen, addr: u.Host, path: u.RequestURI()}
	accepted := 0
	for i, r := range []int{rate, lowRate} {
		if r <= 0 {
			continue
		}
		st, err := sp.steady(r, duration, acct)
		if err != nil {
			return err
		}
		accepted += st.accepted
		if err := rows.Wait(ctx, accepted, 10*time.Millisecond, 2*time.Minute); err != nil {
			return err
		}
		// The phase's CPU ends here, before the latency queries (a scan and sort of
		// its rows: the bench's work, not the pipeline's), unless deliveries to the
		// webhook receiver or the vendor fakes, which the waits below include, are
		// still part of the phase.
		early := !withWebhook && desks == nil && crmd == nil
		var after snapshot
		if early {
			after = acct.snap()
		}
		if err := st.latencies(ctx, pool, rcv, withWebhook); err != nil {
			return err
		}
		if i == 0 && desks != nil {
			if err := desks.report(ctx, pool, 3*time.Minute); err != nil {
				return err
			}
		}
		if i == 0 && crmd != nil {
			if err := crmd.latency(ctx, pool, 3*time.Minute); err != nil {
				return err
			}
		}
		if !early {
			after = acct.snap()
		}
		acct.report(fmt.Sprintf("at %d events/s", r), st.accepted, st.before, after)
		if st.err != nil {
			return st.err
		}
	}

	if burst == 0 {
		return nil
	}
	// Phase 3: a burst, drained.
	reqs := sp.build(burst)
	cs, err := rawhttp.DialAll(sp.addr, conc)
	if err != nil {
		return err
	}
	var fails atomic.Int64
	drainBefore := acct.snap()
	fmt.Printf("drain: %d webhooks from %d senders…\n", burst, conc)
	// The drain of 20,000 takes a few seconds here: profile 2 s of it,
	// from its first second on (profile takes the middle half of 4 s).
	profiles(acct, 4*time.Second*time.Duration(burst)/20000, "drain")
	if crmd != nil {
		tctx, stopTrack := context.WithCancel(ctx)
		defer stopTrack()
		go crmd.track(tctx)
	}
	var lat []time.Duration
	var mu sync.Mutex
	start := rawhttp.Drive(ctx, sp.addr, cs, rawhttp.Load{N: burst, Request: func(i int) []byte { return reqs[i] }},
		func(_, code int, err error, took time.Duration) {
			if err != nil || code != http.StatusAccepted {
				fails.Add(1)
				return
			}
			mu.Lock()
			lat = append(lat, took)
			mu.Unlock()
		})
	acceptTook := time.Since(start)
	if n := fails.Load(); n > 0 {
		return fmt.Errorf("%d burst webhooks were not accepted", n)
	}
	if err := rows.Wait(ctx, accepted+burst, 10*time.Millisecond, 5*time.Minute); err != nil {
		return err
	}
	drained := time.Since(start)
	hooked := drained
	if withWebhook {
		if err := rcv.wait(ctx, accepted+burst, 5*time.Minute); err != nil {
			return err
		}
		hooked = time.Since(start)
	}
	ticketed := map[string]time.Duration{}
	if desks != nil {
		last, err := desks.wait(ctx, pool, 10*time.Minute)
		if err != nil {
			return err
		}
		for name, at := range last {
			ticketed[name] = at.Sub(start)
		}
	}
	var crmTook time.Duration
	if crmd != nil {
		_, at, err := crmd.wait(ctx, pool, 10*time.Minute)
		if err != nil {
			return err
		}
		crmTook = at.Sub(start)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("ingress accepted %d in %s (%.0f req/s; answer p50 %s, p99 %s)\n", burst, acceptTook.Round(time.Millisecond),
		float64(burst)/acceptTook.Seconds(), lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)*99/100].Round(100*time.Microsecond))
	fmt.Printf("all %d rows in the warehouse %s after the first send: %.0f rows/s through the whole pipeline\n", burst,
		drained.Round(time.Millisecond), float64(burst)/drained.Seconds())
	if withWebhook {
		fmt.Printf("all %d at the webhook receiver %s after the first send: %.0f deliveries/s\n", burst,
			hooked.Round(time.Millisecond), float64(burst)/hooked.Seconds())
	}
	if desks != nil {
		for _, name := range []string{"zendesk", "freshdesk"} {
			n := desks.count(name)
			fmt.Printf("all %d %s tickets (every detractor's, both phases) %s after the drain's first send: %.0f tickets/s during the drain\n", n, name,
				ticketed[name].Round(time.Millisecond), float64(n-desks.phase1[name])/ticketed[name].Seconds())
		}
	}
	if crmd != nil {
		crmd.report(burst, crmTook)
	}
	acct.report("drain", burst, drainBefore, acct.snap())
	for _, name := range services {
		fmt.Printf("  %-15s peak RSS %4d MiB\n", name, stack.PeakRSSKiB(p.Services[name].PID())/1024)
	}
	return nil
}

// receiver is the webhook destination's receiver: it records, per
// webhook-id, when the first delivery arrived and the event's received_at.
type receiver struct {
	mu    sync.Mutex
	got   map[string]delivery // webhook-id -> first delivery
	dups  int
	count atomic.Int64
}

func newReceiver() *receiver { return &receiver{got: map[string]delivery{}} }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	var ev struct {
		ReceivedAt time.Time `json:"received_at"`
	}
	if err := json.NewDecoder(req.Body).Decode(&ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	if _, seen := r.got[id]; seen {
		r.dups++
	} else {
		r.got[id] = delivery{receivedAt: ev.ReceivedAt, ms: float64(now.Sub(ev.ReceivedAt).Microseconds()) / 1000}
		r.count.Add(1)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) wait(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for r.count.Load() < int64(n) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the webhook receiver has %d of %d events after %s", r.count.Load(), n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
