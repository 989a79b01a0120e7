// Command pipelinebench measures the whole pipeline as its users see it:
// signed webhooks in at the ingress, rows out in the warehouse. It starts
// the dev broker, redis-server, PostgreSQL and every service as its own
// process, then runs two phases:
//
//  1. latency: webhooks at a steady rate (-rate per second for -duration);
//     for every row, webhook→row = the row's _cl_batched_at (the INSERT's
//     transaction time) minus its _cl_received_at (the ingress's receipt),
//     both from this machine's clock; p50/p90/p99/max are printed.
//
//  2. drain: -burst webhooks sent as fast as -c senders can; the time from
//     the first send to the last row gives the pipeline's rows/s.
//
//     go run ./tools/pipelinebench -rate 200 -duration 20s -burst 20000
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

func main() {
	rate := flag.Int("rate", 200, "webhooks per second in the latency phase")
	duration := flag.Duration("duration", 20*time.Second, "length of the latency phase")
	burst := flag.Int("burst", 20000, "webhooks in the drain phase (0: skip it)")
	conc := flag.Int("c", 32, "concurrent senders in the drain phase")
	partitions := flag.Int("partitions", 6, "partitions per topic")
	var env stack.EnvFlags
	flag.Var(&env, "env", "NAME=value added to every service's environment (repeatable)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *rate, *duration, *burst, *conc, *partitions, env); err != nil {
		fmt.Fprintln(os.Stderr, "pipelinebench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, rate int, duration time.Duration, burst, conc, partitions int, env []string) error {
	dir, bin, cleanup, err := stack.Workspace(ctx, "pipelinebench")
	if err != nil {
		return err
	}
	defer cleanup()
	broker, err := stack.StartBroker(ctx, bin, dir, 0, partitions, kafkaio.NewTopics("").All())
	if err != nil {
		return err
	}
	defer broker.Stop()
	redis, err := localinfra.StartRedis(ctx, dir)
	if err != nil {
		return err
	}
	defer redis.Stop()
	pg, err := localinfra.StartPostgres(ctx)
	if err != nil {
		return err
	}
	defer pg.Stop()
	p := &stack.Pipeline{BinDir: bin, Dir: filepath.Join(dir, "logs"), Brokers: broker.Addrs, Redis: redis.Addr,
		DatabaseURL: pg.URL, Secret: "dl_bench_secret", Token: delightedgen.IngestToken(),
		Env: append([]string{"LOG_LEVEL=warn"}, env...)}
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
	gen := delightedgen.New([]byte(p.Secret), uint64(time.Now().UnixNano()))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

	// Phase 1: a steady rate.
	fmt.Printf("latency: %d webhooks/s for %s…\n", rate, duration)
	sent, failed := 0, 0
	tick := time.NewTicker(time.Second / time.Duration(rate))
	var wg sync.WaitGroup
	var fails atomic.Int64
	for end := time.Now().Add(duration); time.Now().Before(end) && ctx.Err() == nil; sent++ {
		<-tick.C
		w, _ := gen.Response()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, err := delightedgen.Send(ctx, client, p.IngressURL, w); err != nil || code != http.StatusAccepted {
				fails.Add(1)
			}
		}()
	}
	tick.Stop()
	wg.Wait()
	failed = int(fails.Load())
	if failed > 0 {
		return fmt.Errorf("%d of %d webhooks were not accepted", failed, sent)
	}
	if err := waitRows(ctx, pool, sent, 2*time.Minute); err != nil {
		return err
	}
	var p50, p90, p99, mx float64
	if err := pool.QueryRow(ctx, `SELECT
		percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.9) WITHIN GROUP (ORDER BY l),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l)
		FROM (SELECT extract(epoch FROM _cl_batched_at - _cl_received_at) * 1000 AS l FROM closedloop.feedback_events) x`).
		Scan(&p50, &p90, &p99, &mx); err != nil {
		return err
	}
	fmt.Printf("webhook→row over %d rows at %d/s: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n", sent, rate, p50, p90, p99, mx)

	if burst == 0 {
		return nil
	}
	// Phase 2: a burst, drained.
	fmt.Printf("drain: %d webhooks from %d senders…\n", burst, conc)
	work := make(chan delightedgen.Webhook, conc*2)
	go func() {
		defer close(work)
		for range burst {
			w, _ := gen.Response()
			select {
			case work <- w:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	var lat []time.Duration
	var mu sync.Mutex
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range work {
				t0 := time.Now()
				code, err := delightedgen.Send(ctx, client, p.IngressURL, w)
				if err != nil || code != http.StatusAccepted {
					fails.Add(1)
					continue
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	accepted := time.Since(start)
	if n := fails.Load(); n > 0 {
		return fmt.Errorf("%d burst webhooks were not accepted", n)
	}
	if err := waitRows(ctx, pool, sent+burst, 5*time.Minute); err != nil {
		return err
	}
	drained := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("ingress accepted %d in %s (%.0f req/s; answer p50 %s, p99 %s)\n", burst, accepted.Round(time.Millisecond),
		float64(burst)/accepted.Seconds(), lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)*99/100].Round(100*time.Microsecond))
	fmt.Printf("all %d rows in the warehouse %s after the first send: %.0f rows/s through the whole pipeline\n", burst,
		drained.Round(time.Millisecond), float64(burst)/drained.Seconds())
	for _, name := range []string{"ingress", "normalizer", "enricher", "sink-warehouse"} {
		pid := p.Services[name].PID()
		fmt.Printf("  %-15s CPU %6.1f s, peak RSS %4d MiB\n", name, stack.CPUSeconds(pid), stack.PeakRSSKiB(pid)/1024)
	}
	return nil
}

// waitRows waits until the warehouse holds n rows.
func waitRows(ctx context.Context, pool *pgxpool.Pool, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var got int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM closedloop.feedback_events`).Scan(&got)
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the warehouse has %d of %d rows after %s", got, n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
