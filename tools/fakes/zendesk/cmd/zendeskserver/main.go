// Command zendeskserver is the local Zendesk of `make run` and the tests
// (package zendeskfake): tickets created, found by external id and
// commented through the Support API with an API token, the Team plan's 200
// requests a minute. Each ticket and comment is printed.
//
//	zendeskserver -addr 127.0.0.1:8098 -email agent@example.com -token dev-zendesk-token
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	zendeskfake "github.com/closedloop/closedloop/tools/fakes/zendesk"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8098", "listen address")
	email := flag.String("email", "agent@example.com", "the API user's email")
	token := flag.String("token", "dev-zendesk-token", "the API user's token")
	perMinute := flag.Int("per-minute", 200, "requests per minute (429 past it)")
	flag.Parse()
	s := zendeskfake.New()
	s.PerMinute, s.Out = *perMinute, os.Stdout
	s.AddAPIToken(*email, *token)
	fmt.Printf("zendeskserver on http://%s: API user %s/token\n", *addr, *email)
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
