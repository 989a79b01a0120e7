// Command hubspotserver is the local HubSpot of `make run` and the tests
// (package hubspotfake): contacts upserted by email, properties created,
// tasks and notes, opt-outs through the communication-preferences API,
// the app's 100 requests per 10 s. Each contact write and opt-out is
// printed; GET /_fake/contacts and /_fake/unsubscribes show them.
//
//	hubspotserver -addr 127.0.0.1:8093 -token dev-hubspot-token
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	hubspotfake "github.com/closedloop/closedloop/tools/fakes/hubspot"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8093", "listen address")
	token := flag.String("token", "dev-hubspot-token", "the private app's access token")
	per10s := flag.Int("per-10s", 100, "requests per 10 seconds (429 past it)")
	daily := flag.Int("daily", 0, "requests per day (0: no daily limit)")
	batchErrors := flag.String("batch-errors", "multi-status", "how a batch with a refused input answers: multi-status (207) or whole (400)")
	gdpr := flag.Bool("gdpr", false, "require a legal basis on unsubscribes")
	latency := flag.Duration("latency", 0, "delay of every API answer")
	contacts := flag.String("contacts", "", "comma-separated emails of contacts that exist at start")
	flag.Parse()
	s := hubspotfake.New()
	s.PerTenSeconds, s.Daily, s.BatchErrors, s.GDPR, s.Out = *per10s, *daily, *batchErrors, *gdpr, os.Stdout
	s.SetLatency(*latency)
	s.AddToken(*token)
	for _, e := range strings.Split(*contacts, ",") {
		if e != "" {
			s.AddContact(e, nil)
		}
	}
	fmt.Printf("hubspotserver on http://%s: private app token %q, %d requests per 10 s\n", *addr, *token, *per10s)
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
