// Command salesforceserver is the local Salesforce org of `make run` and
// the tests (package salesforcefake): OAuth client credentials, Contacts
// and Leads found by SOQL and updated through the Composite sObject
// collections API, Tasks upserted on an External ID, the org's daily API
// quota. Each update is printed; GET /_fake/records?type=Contact shows them.
//
//	salesforceserver -addr 127.0.0.1:8094 -client-id dev-sf-client -client-secret dev-sf-secret -contacts a@example.com
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	salesforcefake "github.com/closedloop/closedloop/tools/fakes/salesforce"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8094", "listen address")
	clientID := flag.String("client-id", "dev-sf-client", "the connected app's consumer key")
	secret := flag.String("client-secret", "dev-sf-secret", "the connected app's consumer secret")
	daily := flag.Int("daily-limit", 0, "API requests per 24 hours (0: none)")
	latency := flag.Duration("latency", 0, "delay of every answer")
	contacts := flag.String("contacts", "", "comma-separated emails of Contacts that exist at start")
	leads := flag.String("leads", "", "comma-separated emails of Leads that exist at start")
	flag.Parse()
	s := salesforcefake.New(*clientID, *secret)
	s.DailyLimit, s.Out = *daily, os.Stdout
	s.SetLatency(*latency)
	for obj, list := range map[string]string{"Contact": *contacts, "Lead": *leads} {
		for _, e := range strings.Split(list, ",") {
			if e != "" {
				s.Add(obj, salesforcefake.Record{"Email": e, "LastName": strings.Split(e, "@")[0], "Company": "Example"})
			}
		}
	}
	fmt.Printf("salesforceserver on http://%s: client %q\n", *addr, *clientID)
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
