// Command freshdeskserver is the local Freshdesk of `make run` and the tests
// (package freshdeskfake): tickets created, listed by requester and noted
// through the v2 API with an API key, 200 requests a minute. Each ticket and
// note is printed.
//
//	freshdeskserver -addr 127.0.0.1:8097 -key dev-freshdesk-key
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	freshdeskfake "github.com/closedloop/closedloop/tools/fakes/freshdesk"
	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8097", "listen address")
	key := flag.String("key", "dev-freshdesk-key", "an API key the fake accepts")
	perMinute := flag.Int("per-minute", 200, "requests per minute (429 past it)")
	latency := flag.Duration("latency", 0, "delay of every API answer")
	hookURL := flag.String("webhook-url", "", "where the automation webhooks are sent (none when empty)")
	var agent fake.AgentFlags
	agent.Register(flag.CommandLine)
	flag.Parse()
	s := freshdeskfake.New()
	s.PerMinute, s.Out = *perMinute, os.Stdout
	s.SetLatency(*latency)
	s.AddAPIKey(*key)
	if *hookURL != "" {
		s.WebhooksTo(*hookURL).Log = os.Stdout
		fmt.Printf("freshdeskserver: automation webhooks go to %s\n", *hookURL)
	}
	if agent.Share > 0 {
		s.Agent = s.NewAgent(agent.Share, agent.ReplyAfter, agent.SolveAfter)
	}
	fmt.Printf("freshdeskserver on http://%s: API key %s\n", *addr, *key)
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
