// Command backfillbench measures a backfill: N responses in the local
// Delighted API (tools/fakes/delighted, in this process, no rate limit),
// pulled by a backfill job of the admin service through the whole pipeline
// (ingress idle, normalizer, enricher, sink-warehouse) into PostgreSQL —
// events per second from the job's start to the last warehouse row, and
// each process's CPU per event.
//
// In the same run, on a pipeline of its own, the naive baseline: what a
// team without backfills does — a script that lists the same API and
// re-sends every item as a signed webhook to the ingress (-c concurrent
// senders).
//
//	go run ./tools/backfillbench -n 100000
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/pull"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	delightedfake "github.com/closedloop/closedloop/tools/fakes/delighted"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

const apiKey = "bench-delighted-key"

func main() {
	n := flag.Int("n", 100000, "responses to backfill")
	conc := flag.Int("c", 32, "concurrent senders of the naive baseline")
	baseline := flag.Bool("baseline", true, "also run the naive baseline (list and re-send as webhooks)")
	partitions := flag.Int("partitions", 6, "partitions per topic")
	flag.Parse()
	fmt.Printf("host: %s\n", stack.MeasureHost(time.Second))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *n, *conc, *partitions, *baseline); err != nil {
		fmt.Fprintln(os.Stderr, "backfillbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, n, conc, partitions int, baseline bool) error {
	dir, bin, cleanup, err := stack.Workspace(ctx, "backfillbench")
	if err != nil {
		return err
	}
	defer cleanup()
	infra, err := stack.StartInfra(ctx, bin, dir, partitions, append(kafkaio.NewTopics("bf.").All(), kafkaio.NewTopics("naive.").All()...))
	if err != nil {
		return err
	}
	defer infra.Stop()
	broker, redis, pg := infra.Broker, infra.Redis, infra.Postgres

	// The provider's history: n responses over the last days.
	api := delightedfake.New(apiKey)
	gen := delightedgen.New([]byte("dl_bench_secret"), 7)
	for range n {
		_, w := gen.Response()
		d, err := w.Data()
		if err != nil {
			return err
		}
		if err := api.AddResponse(d); err != nil {
			return err
		}
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	pool, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	fmt.Printf("backfillbench: %d responses in the local Delighted API, %d partitions (the host: the first line)\n", n, partitions)

	start := func(name string, admin bool) (*stack.Pipeline, error) {
		p := &stack.Pipeline{Name: name, BinDir: bin, Dir: filepath.Join(dir, name), Brokers: broker.Addrs, Redis: redis.Addr,
			DatabaseURL: pg.URL, Secret: "dl_bench_secret", Token: delightedgen.IngestToken(),
			Env:              []string{"LOG_LEVEL=warn", "BENCH_DELIGHTED_API_KEY=" + apiKey},
			Run:              []string{"sink-warehouse", "enricher", "normalizer", "ingress"},
			DelightedAPIYAML: "    api:\n      base_url: " + srv.URL + "/v1\n      key: env:BENCH_DELIGHTED_API_KEY\n      rate_per_second: 1000\n"}
		if admin {
			p.Run = append(p.Run, "admin")
			p.AdminTokens = map[string]string{"bench": "operator"}
		}
		if err := p.Start(ctx); err != nil {
			_ = p.Stop()
			return nil, err
		}
		return p, nil
	}

	// The backfill.
	p, err := start("bf", true)
	if err != nil {
		return err
	}
	defer p.Stop()
	conn, err := grpc.NewClient(p.AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.AdminToken("bench"))
	cpu0 := cpuOf(p)
	reqs0 := api.Stats().Requests
	t0 := time.Now()
	res, err := adminv1.NewBackfillServiceClient(conn).StartBackfill(actx, &adminv1.StartBackfillRequest{Source: "delighted",
		Since: timestamppb.New(time.Now().Add(-30 * 24 * time.Hour)), Until: timestamppb.Now()})
	if err != nil {
		return err
	}
	if err := waitRows(ctx, pool, p.Schema(), n, 15*time.Minute); err != nil {
		return err
	}
	took := time.Since(t0)
	job, err := adminv1.NewBackfillServiceClient(conn).ListBackfills(actx, &adminv1.ListBackfillsRequest{})
	if err != nil {
		return err
	}
	var fetchedIn time.Duration
	for _, j := range job.Jobs {
		if j.Id == res.Job.Id && j.FinishedAt != nil {
			fetchedIn = j.FinishedAt.AsTime().Sub(j.StartedAt.AsTime())
		}
	}
	fmt.Printf("backfill: %d responses fetched in %s (%d API requests), all %d rows in the warehouse %s after the start: %.0f events/s\n",
		n, fetchedIn.Round(time.Millisecond), api.Stats().Requests-reqs0, n, took.Round(time.Millisecond), float64(n)/took.Seconds())
	report(p, cpu0, n)

	if !baseline {
		return nil
	}
	// The naive baseline: list the same API, re-send every item as a
	// signed webhook.
	q, err := start("naive", false)
	if err != nil {
		return err
	}
	defer q.Stop()
	lister, err := pull.NewDelighted(pull.DelightedOptions{BaseURL: srv.URL + "/v1", APIKey: apiKey})
	if err != nil {
		return err
	}
	cpu0 = cpuOf(q)
	self0 := stack.SelfCPU()
	t0 = time.Now()
	work := make(chan delightedgen.Webhook, conc*2)
	var wg sync.WaitGroup
	var failed sync.Map
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range work {
				if code, err := delightedgen.Send(ctx, client, q.IngressURL, w); err != nil || code != http.StatusAccepted {
					failed.Store(w.EventID, code)
				}
			}
		}()
	}
	listed := 0
	cursor := ""
	for {
		page, err := lister.List(ctx, pull.Window{}, cursor)
		if err != nil {
			close(work)
			return err
		}
		for _, it := range page.Items {
			if it.EventType == "unsubscribe.created" {
				continue
			}
			work <- delightedgen.Webhook{EventID: it.EventID, EventType: it.EventType, Body: it.Body, Signature: delightedgen.Sign([]byte("dl_bench_secret"), it.Body)}
			listed++
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	close(work)
	wg.Wait()
	if err := waitRows(ctx, pool, q.Schema(), listed, 15*time.Minute); err != nil {
		return err
	}
	took2 := time.Since(t0)
	fmt.Printf("naive baseline (list, re-send as webhooks from %d senders): all %d rows %s after the start: %.0f events/s; the script's CPU %.1f s\n",
		conc, listed, took2.Round(time.Millisecond), float64(listed)/took2.Seconds(), (stack.SelfCPU() - self0).Seconds())
	report(q, cpu0, listed)
	fmt.Printf("ratio: the backfill job runs at %.2f× the naive baseline\n", (float64(n)/took.Seconds())/(float64(listed)/took2.Seconds()))
	return nil
}

func cpuOf(p *stack.Pipeline) map[string]float64 {
	out := map[string]float64{}
	for _, name := range p.Run {
		out[name] = stack.CPUSeconds(p.Services[name].PID())
	}
	return out
}

func report(p *stack.Pipeline, cpu0 map[string]float64, n int) {
	total := 0.0
	for _, name := range p.Run {
		cpu := stack.CPUSeconds(p.Services[name].PID()) - cpu0[name]
		total += cpu
		fmt.Printf("  %-15s CPU %6.1f s (%5.0f µs/event)\n", name, cpu, cpu*1e6/float64(n))
	}
	fmt.Printf("  %-15s CPU %6.1f s (%5.0f µs/event)\n", "all services", total, total*1e6/float64(n))
}

func waitRows(ctx context.Context, pool *pgxpool.Pool, schema string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var got int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.feedback_events`).Scan(&got)
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s has %d of %d rows after %s", schema, got, n, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
