// Command delightedserver is the local Delighted API of `make run` and the
// benchmarks (package delightedfake): survey responses and unsubscribes
// listed with an API key, a per-second limit. Items are added over
// POST /_fake/responses (the webhook generator does).
//
//	delightedserver -addr 127.0.0.1:8098 -key dev-delighted-key -per-second 5
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"

	delightedfake "github.com/closedloop/closedloop/tools/fakes/delighted"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8098", "listen address")
	key := flag.String("key", "dev-delighted-key", "the API key the fake accepts")
	perSecond := flag.Int("per-second", 5, "requests per second (429 past it; 0: unlimited)")
	latency := flag.Duration("latency", 0, "delay of every API answer")
	flag.Parse()
	s := delightedfake.New(*key)
	s.PerSecond = *perSecond
	s.Latency.Set(*latency)
	fmt.Printf("delightedserver on http://%s/v1: API key %s, %d requests/s\n", *addr, *key, *perSecond)
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
