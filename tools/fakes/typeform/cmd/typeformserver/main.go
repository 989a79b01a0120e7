// Command typeformserver is the local Typeform Responses API of `make run`
// and the tests (package typeformfake): responses of forms listed with a
// personal access token, 2 requests a second. Responses are added over
// POST /_fake/forms/{form_id}/responses.
//
//	typeformserver -addr 127.0.0.1:8099 -token dev-typeform-token
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"

	typeformfake "github.com/closedloop/closedloop/tools/fakes/typeform"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8099", "listen address")
	token := flag.String("token", "dev-typeform-token", "the personal access token the fake accepts")
	perSecond := flag.Int("per-second", 2, "requests per second (429 past it; 0: unlimited)")
	latency := flag.Duration("latency", 0, "delay of every API answer")
	flag.Parse()
	s := typeformfake.New(*token)
	s.PerSecond = *perSecond
	s.Latency.Set(*latency)
	fmt.Printf("typeformserver on http://%s: token %s, %d requests/s\n", *addr, *token, *perSecond)
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
