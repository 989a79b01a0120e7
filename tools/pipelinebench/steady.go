package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/rawhttp"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// sender sends generated Delighted webhooks to the ingress, built before
// each phase and written on raw keep-alive connections
// (tools/internal/rawhttp): net/http's client, generating and signing took
// a quarter of a core at 1,000/s from the pipeline on the same two cores.
type sender struct {
	ctx  context.Context
	gen  *delightedgen.Generator
	addr string // the ingress's host:port
	path string // the source's ingest path
}

// build makes n requests, each a new signed response.
func (s *sender) build(n int) [][]byte {
	reqs := make([][]byte, n)
	for i := range reqs {
		w, _ := s.gen.Response()
		reqs[i] = rawhttp.AppendPost(nil, s.path, w.Body, "Content-Type", "application/json",
			"User-Agent", "Delighted-Webhooks/1.0 (closedloop generator)", "X-Delighted-Webhook-Signature", w.Signature)
	}
	return reqs
}

// steadyConns is how many connections a steady phase sends on: enough for
// answers 100 ms late at 1,000/s before a request waits for a connection.
const steadyConns = 128

// steadyRun is one steady phase: what was sent, when, and the CPU snapshot
// at its start.
type steadyRun struct {
	rate           int
	sent, accepted int
	start, end     time.Time
	before         snapshot
	err            error // the rate achieved was below the rate asked for
}

// steady sends rate webhooks per second for d, open loop: each webhook has
// a due time (start + i/rate) and is sent then on one of steadyConns
// connections, so a slow answer delays only the requests behind it on its
// connection. It reports the rate achieved —
// sent over the time from the first send to the last answer — and sets err
// when that is below 97 % of the rate asked for: then the phase's latencies
// do not describe that rate.
func (s *sender) steady(rate int, d time.Duration, acct *account) (*steadyRun, error) {
	interval := time.Second / time.Duration(rate)
	reqs := s.build(int(d / interval))
	fmt.Printf("steady: %d webhooks/s for %s…\n", rate, d)
	st := &steadyRun{rate: rate, before: acct.snap()}
	profiles(acct, d, strconv.Itoa(rate))
	cs, err := rawhttp.DialAll(s.addr, steadyConns)
	if err != nil {
		return nil, err
	}
	cpu0 := stack.SelfCPU()
	var mu sync.Mutex
	codes := map[int]int{} // status of the webhooks not accepted (0: no answer)
	st.start = rawhttp.Drive(s.ctx, s.addr, cs, rawhttp.Load{N: len(reqs), Request: func(i int) []byte { return reqs[i] }, Interval: interval},
		func(_, code int, err error, _ time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			st.sent++
			if err != nil || code != http.StatusAccepted {
				codes[code]++
			}
		})
	st.end = time.Now()
	failed := 0
	for _, n := range codes {
		failed += n
	}
	st.accepted = st.sent - failed
	if failed > 0 {
		// The ingress pushed back (429/503 + Retry-After, a provider retries):
		// reported, and the latencies are of the rest.
		fmt.Printf("NOT ACCEPTED: %d of %d webhooks (by status, 0 = no answer: %v): the pipeline did not keep up\n", failed, st.sent, codes)
	}
	took := st.end.Sub(st.start)
	achieved := float64(st.sent) / took.Seconds()
	fmt.Printf("sent %d webhooks in %s: %.0f/s achieved (asked %d/s); the load generator, receiver and fakes (this process) used %.1f s of CPU\n",
		st.sent, took.Round(time.Millisecond), achieved, rate, (stack.SelfCPU() - cpu0).Seconds())
	if achieved < 0.97*float64(rate) {
		st.err = fmt.Errorf("the steady phase sent %.0f webhooks/s, below the %d/s asked for: its numbers do not describe that rate", achieved, rate)
		fmt.Println("RATE NOT MET:", st.err)
	}
	return st, s.ctx.Err()
}

// phaseHops is each row the ingress received between $1 and $2, with its
// webhook→row latency l and its hops in ms, from the event's own timestamps
// (the ingress's receipt, the normalizer's normalized_at, the enricher's
// enriched_at and the sink's INSERT): →normalized n, →enriched e, →row w.
const phaseHops = `SELECT event_id, _cl_received_at,
	extract(epoch FROM _cl_batched_at - _cl_received_at) * 1000 AS l,
	extract(epoch FROM (event->>'normalized_at')::timestamptz - _cl_received_at) * 1000 AS n,
	extract(epoch FROM (event->'enrichment'->>'enriched_at')::timestamptz - (event->>'normalized_at')::timestamptz) * 1000 AS e,
	extract(epoch FROM _cl_batched_at - (event->'enrichment'->>'enriched_at')::timestamptz) * 1000 AS w
	FROM closedloop.feedback_events WHERE _cl_received_at >= $1 AND _cl_received_at <= $2`

// stallMs is the webhook→row latency past which a row counts as stalled:
// ten times the p99 target at 1,000/s.
const stallMs = 1000

// stalls says which hop the phase's stalled rows lost their time in: how
// many there were, when the ingress received them, and the slowest one's
// hops. A stall of one stage (a rebalance, a claim left to expire, a
// produce retried) then shows in the output of the run it happened in.
func (st *steadyRun) stalls(ctx context.Context, pool *pgxpool.Pool) error {
	var count int
	var first, last time.Time
	if err := pool.QueryRow(ctx, `SELECT count(*), min(_cl_received_at), max(_cl_received_at) FROM (`+phaseHops+`) x WHERE l > $3`,
		st.start, st.end, stallMs).Scan(&count, &first, &last); err != nil {
		return err
	}
	var id string
	var at time.Time
	var l, n, e, w float64
	if err := pool.QueryRow(ctx, phaseHops+` ORDER BY l DESC LIMIT 1`, st.start, st.end).Scan(&id, &at, &l, &n, &e, &w); err != nil {
		return err
	}
	fmt.Printf("STALLED    %d rows over %d ms, received %.1f–%.1f s into the phase; the slowest, %s (%.1f s in): →normalized %.1f, →enriched %.1f, →row %.1f ms\n",
		count, stallMs, first.Sub(st.start).Seconds(), last.Sub(st.start).Seconds(), id, at.Sub(st.start).Seconds(), n, e, w)
	return nil
}

// latencies prints webhook→row (and webhook→delivery) percentiles of the
// events the phase sent: rows whose receipt falls in the phase's window.
func (st *steadyRun) latencies(ctx context.Context, pool *pgxpool.Pool, rcv *receiver, withWebhook bool) error {
	// One scan of the phase's rows: webhook→row, and where the time went hop
	// by hop (each hop includes the Kafka write and the next stage's fetch
	// and linger).
	var n int
	var p50, p90, p99, mx float64
	var hops [3][2]float64
	if err := pool.QueryRow(ctx, `SELECT count(*),
		coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY l), 0), coalesce(percentile_cont(0.9) WITHIN GROUP (ORDER BY l), 0),
		coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY l), 0), coalesce(max(l), 0),
		coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY n), 0), coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY n), 0),
		coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY e), 0), coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY e), 0),
		coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY w), 0), coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY w), 0)
		FROM (`+phaseHops+`) x`, st.start, st.end).
		Scan(&n, &p50, &p90, &p99, &mx, &hops[0][0], &hops[0][1], &hops[1][0], &hops[1][1], &hops[2][0], &hops[2][1]); err != nil {
		return err
	}
	fmt.Printf("warehouse  webhook→row      over %d rows:       p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n", n, p50, p90, p99, mx)
	fmt.Printf("           by hop, p50 / p99: →normalized %.1f / %.1f ms, →enriched %.1f / %.1f ms, →row %.1f / %.1f ms\n",
		hops[0][0], hops[0][1], hops[1][0], hops[1][1], hops[2][0], hops[2][1])
	if mx > stallMs {
		if err := st.stalls(ctx, pool); err != nil {
			return err
		}
	}
	if withWebhook {
		if err := rcv.waitWindow(ctx, st.start, st.end, st.accepted, 2*time.Minute); err != nil {
			return err
		}
		d50, d90, d99, dmax, k := rcv.latencies(st.start, st.end)
		fmt.Printf("webhook    webhook→delivery over %d deliveries: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%d delivered twice so far)\n",
			k, d50, d90, d99, dmax, rcv.duplicates())
	}
	return nil
}

// delivery is one event's first delivery to the webhook receiver.
type delivery struct {
	receivedAt time.Time // the ingress's receipt
	ms         float64   // receipt → delivery
}

func (r *receiver) waitWindow(ctx context.Context, from, to time.Time, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, _, _, _, k := r.latencies(from, to); k >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_, _, _, _, k := r.latencies(from, to)
			return fmt.Errorf("the webhook receiver has %d of the phase's %d events after %s", k, n, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// latencies are the percentiles of the deliveries of events received by
// the ingress in [from, to], and their number.
func (r *receiver) latencies(from, to time.Time) (p50, p90, p99, mx float64, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var l []float64
	for _, d := range r.got {
		if !d.receivedAt.Before(from) && !d.receivedAt.After(to) {
			l = append(l, d.ms)
		}
	}
	if len(l) == 0 {
		return 0, 0, 0, 0, 0
	}
	sort.Float64s(l)
	at := func(q float64) float64 { return l[min(len(l)-1, int(q*float64(len(l))))] }
	return at(0.5), at(0.9), at(0.99), l[len(l)-1], len(l)
}

func (r *receiver) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dups
}

// profileServices names the services -profile profiles.
var profileServices []string

// profiles starts a CPU profile of each service named by -profile over the
// middle half of a phase of about length d, written to
// /tmp/pipelinebench.<service>.<phase>.pprof.
func profiles(acct *account, d time.Duration, phase string) {
	for _, pr := range acct.procs {
		if slices.Contains(profileServices, pr.name) {
			go profile(pr.ops, d, fmt.Sprintf("/tmp/pipelinebench.%s.%s.pprof", pr.name, phase))
		}
	}
}

// profile writes a CPU profile of the middle of a phase of length d.
func profile(ops string, d time.Duration, path string) {
	time.Sleep(d / 4)
	if err := stack.FetchProfile(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", ops, max(1, int(d.Seconds()/2))), path); err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	fmt.Println("profile of", path)
}
