// Command webhookgen sends signed Delighted webhooks to a running ingress —
// a realistic mix of created/updated responses and unsubscribes, with
// duplicate deliveries — and prints what it sent and the latency of the
// ingress answers (which come only after the acks=all write to Kafka).
//
//	webhookgen -url http://127.0.0.1:8080/v1/hooks/delighted/<token> \
//	           -secret dev_delighted_api_key -n 10000 -c 32
//
// With -delighted-api (a local Delighted API, tools/fakes/delighted) every
// response is also published there, and -drop makes that share of the
// responses never send their webhooks (as a provider that gave up): what
// reconciliation must find.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/closedloop/closedloop/tools/internal/delightedgen"
)

func main() {
	url := flag.String("url", "", "ingress webhook URL, /v1/hooks/{source}/{token} (required)")
	secret := flag.String("secret", "", "the source's Delighted signing secret (required)")
	n := flag.Int("n", 1000, "number of distinct events to send")
	conc := flag.Int("c", 16, "concurrent senders")
	dup := flag.Float64("dup", 0.1, "fraction of events delivered twice")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "generator seed")
	api := flag.String("delighted-api", "", "a local Delighted API (tools/fakes/delighted) where every response is published, e.g. http://127.0.0.1:8098")
	drop := flag.Float64("drop", 0, "share of responses whose webhooks are never sent (needs -delighted-api)")
	flag.Parse()
	if *drop > 0 && *api == "" || *drop < 0 || *drop >= 1 {
		fmt.Fprintln(os.Stderr, "webhookgen: -drop is a share in [0, 1) and needs -delighted-api (else the dropped responses exist nowhere)")
		os.Exit(2)
	}
	if *url == "" || *secret == "" || *n < 1 || *conc < 1 {
		fmt.Fprintln(os.Stderr, "webhookgen: -url and -secret are required; -n and -c must be positive")
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	gen := delightedgen.New([]byte(*secret), *seed)
	work := make(chan delightedgen.Webhook, *conc*4)
	apiClient := &http.Client{Timeout: 5 * time.Second}
	var dropped atomic.Int64
	go func() {
		defer close(work)
		sent := 0
		for i := 0; sent < *n && ctx.Err() == nil; i++ {
			c, u := gen.Response()
			if *api != "" {
				if err := publish(ctx, apiClient, *api, u); err != nil {
					fmt.Fprintln(os.Stderr, "webhookgen: publishing to the Delighted API:", err)
					stop()
					return
				}
			}
			if *drop > 0 && float64(i%1000) < *drop*1000 {
				dropped.Add(1)
				sent += 2
				continue
			}
			for _, w := range []delightedgen.Webhook{c, u} {
				if sent == *n {
					break
				}
				work <- w
				if float64(sent%100)/100 < *dup {
					work <- w
				}
				sent++
			}
		}
	}()

	transport := &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc}
	client := &http.Client{Timeout: 10 * time.Second, Transport: transport}
	var mu sync.Mutex
	var lat []time.Duration
	codes := map[int]int{}
	var errs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range work {
				t0 := time.Now()
				code, err := delightedgen.Send(ctx, client, *url, w)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					errs.Add(1)
				} else {
					codes[code]++
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	total := len(lat) + int(errs.Load())
	fmt.Printf("requests      %d (%d distinct events, %.0f%% delivered twice) in %s with %d senders\n", total, *n, *dup*100, elapsed.Round(time.Millisecond), *conc)
	fmt.Printf("throughput    %.0f requests/s\n", float64(total)/elapsed.Seconds())
	if *drop > 0 {
		fmt.Printf("dropped       the webhooks of %d responses (published to %s only)\n", dropped.Load(), *api)
	}
	fmt.Printf("latency       p50 %s  p90 %s  p99 %s  max %s\n", pct(0.5).Round(10*time.Microsecond), pct(0.9).Round(10*time.Microsecond),
		pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond))
	keys := make([]int, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		fmt.Printf("status %d    %d\n", k, codes[k])
	}
	if e := errs.Load(); e > 0 {
		fmt.Printf("errors        %d\n", e)
	}
	if errs.Load() > 0 || codes[http.StatusAccepted] != total {
		os.Exit(1)
	}
}

// publish adds the response in its final state to the local Delighted API.
func publish(ctx context.Context, c *http.Client, api string, w delightedgen.Webhook) error {
	data, err := w.Data()
	if err != nil {
		return err
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(api, "/")+"/_fake/responses", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST /_fake/responses: %d", resp.StatusCode)
	}
	return nil
}
