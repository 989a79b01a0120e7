// Command ingressbench measures the ingress against its ceiling on this
// machine (`make bench-ingress`). It starts the dev broker and the ingress
// binary, and a ceiling server — a bare net/http server, in its own process,
// that only verifies the Delighted HMAC and answers 200 — then drives each
// with signed ~1.5 KiB webhooks over 64 connections:
//
//  1. closed loop for -duration: the most requests per second each can take;
//  2. open loop at a steady -rate (default 1,000 req/s): latency percentiles.
//
// It reports req/s, p50/p95/p99, non-2xx answers, the ingress's peak RSS, the
// ingress/ceiling ratio, and checks that every 2xx the ingress gave is in the
// raw topic afterwards.
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

const secret = "bench_delighted_key"

func main() {
	ceilingAddr := flag.String("ceiling-server", "", "internal: run the ceiling server on this address")
	conns := flag.Int("c", 64, "connections")
	duration := flag.Duration("duration", 10*time.Second, "length of the closed-loop run against each server")
	rate := flag.Int("rate", 1000, "requests per second of the steady (open-loop) run")
	steady := flag.Duration("steady", 10*time.Second, "length of the steady run")
	var env stack.EnvFlags
	flag.Var(&env, "env", "extra NAME=VALUE for the ingress (repeatable), e.g. -env KAFKA_PRODUCE_LINGER=500us")
	flag.Parse()
	if *ceilingAddr != "" {
		serveCeiling(*ceilingAddr)
		return
	}
	if err := run(*conns, *duration, *rate, *steady, env); err != nil {
		fmt.Fprintln(os.Stderr, "ingressbench:", err)
		os.Exit(1)
	}
}

// serveCeiling is the ceiling: read the body, check the HMAC, answer 200.
func serveCeiling(addr string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		want, _ := hex.DecodeString(strings.TrimPrefix(r.Header.Get("X-Delighted-Webhook-Signature"), "sha256="))
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		if !hmac.Equal(m.Sum(nil), want) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type request struct {
	id   string
	body []byte
	sig  string
}

// payloads are distinct ~1.5 KiB Delighted responses, signed.
func payload(i int) request {
	id := fmt.Sprintf("%064x", i+1<<40)
	pad := strings.Repeat("Sehr zufrieden mit dem Support, schnelle Antworten. ", 17)
	body := fmt.Sprintf(`{"event_type":"survey_response.updated","event_id":"%s","event_data":{"id":"%d","person":{"id":"%d","email":"kunde%d@example.de","name":"Jörg Müller","created_at":1763693600},"survey_type":"nps","score":%d,"comment":%q,"permalink":"https://app.delighted.com/r/%d","created_at":1763780000,"updated_at":1763780095,"person_properties":{"plan":"enterprise","account":{"id":"acct_42","region":"eu-central"},"seats":120},"notes":[],"tags":["bench"],"additional_answers":[]}}`,
		id, 100000+i, 5000+i%977, i, i%11, pad, 100000+i)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return request{id: id, body: []byte(body), sig: "sha256=" + hex.EncodeToString(m.Sum(nil))}
}

type result struct {
	name     string
	n        int
	elapsed  time.Duration
	lat      []time.Duration
	codes    map[int]int
	errs     int
	accepted []string
}

func (r *result) rps() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r *result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

func (r *result) String() string {
	var codes []string
	keys := make([]int, 0, len(r.codes))
	for k := range r.codes {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		codes = append(codes, fmt.Sprintf("%d×%d", r.codes[k], k))
	}
	return fmt.Sprintf("%-28s %8.0f req/s  p50 %7s  p95 %7s  p99 %7s  answers %s, errors %d",
		r.name, r.rps(), r.pct(0.50).Round(10*time.Microsecond), r.pct(0.95).Round(10*time.Microsecond),
		r.pct(0.99).Round(10*time.Microsecond), strings.Join(codes, " "), r.errs)
}

// drive sends requests to url: closed loop over conns connections when
// rate is 0, else open loop at rate req/s.
func drive(name, url string, conns int, d time.Duration, rate int, next *atomic.Int64) *result {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	res := &result{name: name, codes: map[int]int{}}
	var mu sync.Mutex
	do := func() {
		req := payload(int(next.Add(1)))
		hr, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(req.body))
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("X-Delighted-Webhook-Signature", req.sig)
		t0 := time.Now()
		resp, err := client.Do(hr)
		lat := time.Since(t0)
		mu.Lock()
		defer mu.Unlock()
		res.n++
		if err != nil {
			res.errs++
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		res.codes[resp.StatusCode]++
		res.lat = append(res.lat, lat)
		if resp.StatusCode/100 == 2 {
			res.accepted = append(res.accepted, req.id)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	if rate <= 0 {
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < d {
					do()
				}
			}()
		}
	} else {
		interval := time.Second / time.Duration(rate)
		sem := make(chan struct{}, conns*4)
		for i := 0; time.Since(start) < d; i++ {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() { defer wg.Done(); do(); <-sem }()
		}
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	sort.Slice(res.lat, func(i, j int) bool { return res.lat[i] < res.lat[j] })
	tr.CloseIdleConnections()
	return res
}

func run(conns int, d time.Duration, rate int, steady time.Duration, extraEnv []string) error {
	ctx := context.Background()
	dir, bin, cleanup, err := stack.Workspace(ctx, "ingressbench")
	if err != nil {
		return err
	}
	defer cleanup()
	broker, err := stack.StartBroker(ctx, bin, dir, 0, 3, []string{"feedback.raw.v1"})
	if err != nil {
		return err
	}
	defer func() { _ = broker.Stop() }()

	cfg := filepath.Join(dir, "pipeline.yaml")
	token := "tok_bench_0123456789abcdefghijklmn"
	_ = os.WriteFile(cfg, []byte("sources:\n  - name: delighted\n    provider: delighted\n    secrets: [env:BENCH_SECRET]\n    ingest_tokens: [env:BENCH_TOKEN]\n    rate_limit: {per_second: 1000000}\n"), 0o600)
	port, _ := localinfra.FreePort()
	ops, _ := localinfra.FreePort()
	grpc, _ := localinfra.FreePort()
	ing := &stack.Process{Name: "ingress", Bin: filepath.Join(bin, "ingress"), Log: filepath.Join(dir, "ingress.log"), Env: []string{
		"KAFKA_BROKERS=" + broker.Addrs, "CLOSEDLOOP_SERVICE_TOKEN=" + stack.ServiceToken, "OPS_PPROF=true", "KAFKA_CREATE_TOPICS=true", "PIPELINE_CONFIG=" + cfg, "BENCH_SECRET=" + secret, "BENCH_TOKEN=" + token,
		"INGRESS_ADDR=127.0.0.1:" + strconv.Itoa(port), "OPS_ADDR=127.0.0.1:" + strconv.Itoa(ops), "GRPC_ADDR=127.0.0.1:" + strconv.Itoa(grpc),
		"LOG_LEVEL=warn",
	}}
	ing.Env = append(ing.Env, extraEnv...)
	if err := ing.Start(); err != nil {
		return err
	}
	defer func() { _ = ing.Stop() }()
	if err := stack.WaitReady(ctx, ing, "127.0.0.1:"+strconv.Itoa(ops), 30*time.Second); err != nil {
		return err
	}
	cport, _ := localinfra.FreePort()
	self, _ := os.Executable()
	ceil := exec.Command(self, "-ceiling-server", "127.0.0.1:"+strconv.Itoa(cport))
	ceil.Stderr = os.Stderr
	if err := ceil.Start(); err != nil {
		return err
	}
	defer func() { _ = ceil.Process.Kill(); _ = ceil.Wait() }()
	if err := localinfra.WaitTCP(ctx, "127.0.0.1:"+strconv.Itoa(cport), 10*time.Second); err != nil {
		return err
	}

	ingressURL := fmt.Sprintf("http://127.0.0.1:%d/v1/hooks/delighted/%s", port, token)
	ceilingURL := fmt.Sprintf("http://127.0.0.1:%d/hook", cport)
	var next atomic.Int64
	fmt.Printf("payload %d bytes, %d connections, closed loop %s each, then %d req/s for %s\n", len(payload(0).body), conns, d, rate, steady)
	// Warm both up (connections, JIT of the broker's maps, page cache).
	drive("warm-up", ingressURL, conns, time.Second, 0, &next)
	drive("warm-up", ceilingURL, conns, time.Second, 0, &next)

	ceiling := drive("ceiling (HMAC + 200)", ceilingURL, conns, d, 0, &next)
	fmt.Println(ceiling)
	if *profile != "" {
		go func() {
			time.Sleep(d / 4)
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(ops) + "/debug/pprof/profile?seconds=" + strconv.Itoa(max(1, int(d.Seconds()/2))))
			if err != nil {
				fmt.Fprintln(os.Stderr, "profile:", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(*profile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "profile:", err)
				return
			}
			_, _ = io.Copy(f, resp.Body)
			_ = f.Close()
		}()
	}
	best := drive("ingress (acks=all, 202)", ingressURL, conns, d, 0, &next)
	fmt.Println(best)
	ceilSteady := drive(fmt.Sprintf("ceiling @ %d req/s", rate), ceilingURL, conns, steady, rate, &next)
	fmt.Println(ceilSteady)
	st := drive(fmt.Sprintf("ingress @ %d req/s", rate), ingressURL, conns, steady, rate, &next)
	fmt.Println(st)
	fmt.Printf("ingress/ceiling throughput   %.2f\n", best.rps()/ceiling.rps())
	fmt.Printf("ingress peak RSS             %s\n", peakRSS(ing))

	var accepted []string
	for _, r := range []*result{best, st} {
		accepted = append(accepted, r.accepted...)
	}
	found, err := keysIn(ctx, broker.Addrs, "feedback.raw.v1")
	if err != nil {
		return err
	}
	missing := 0
	for _, id := range accepted {
		if !found[id] {
			missing++
		}
	}
	fmt.Printf("2xx found in Kafka           %d of %d\n", len(accepted)-missing, len(accepted))
	if missing > 0 {
		return fmt.Errorf("%d acknowledged webhooks are not in Kafka", missing)
	}
	return nil
}

func peakRSS(p *stack.Process) string {
	kb := stack.PeakRSSKiB(p.PID())
	if kb == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
}

// keysIn reads every record key of topic.
func keysIn(ctx context.Context, brokers, topic string) (map[string]bool, error) {
	client := kafkaio.NewClient([]string{brokers}, 0)
	out := map[string]bool{}
	for p := range 3 {
		offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(p)}}})
		if err != nil {
			return nil, err
		}
		last := offs.Topics[topic][0].LastOffset
		if last == 0 {
			continue
		}
		r := kafkaio.NewReader(kafka.ReaderConfig{Brokers: []string{brokers}, Topic: topic, Partition: p, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
		for {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			m, err := r.ReadMessage(rctx)
			cancel()
			if err != nil {
				_ = r.Close()
				return nil, fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			out[string(m.Key)] = true
			if m.Offset >= last-1 {
				break
			}
		}
		_ = r.Close()
	}
	return out, nil
}

var profile = flag.String("cpuprofile", "", "write a CPU profile of the ingress during the closed-loop run to this file")
