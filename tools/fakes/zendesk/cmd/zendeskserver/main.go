// Command zendeskserver is the local Zendesk of `make run` and the tests
// (package zendeskfake): tickets created, found by external id and
// commented through the Support API with an API token, the Team plan's 200
// requests a minute. Each ticket and comment is printed. With -webhook-url
// its ticket events are sent there, signed as Zendesk signs them; with
// -agent-share a fake agent replies to and solves that share of the tickets.
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

	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
	zendeskfake "github.com/closedloop/closedloop/tools/fakes/zendesk"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8098", "listen address")
	email := flag.String("email", "agent@example.com", "the API user's email")
	token := flag.String("token", "dev-zendesk-token", "the API user's token")
	perMinute := flag.Int("per-minute", 200, "requests per minute (429 past it)")
	latency := flag.Duration("latency", 0, "delay of every API answer")
	hookURL := flag.String("webhook-url", "", "where ticket events are sent as Zendesk webhooks (none when empty)")
	hookSecret := flag.String("webhook-secret", "", "the webhook's signing secret")
	var agent fake.AgentFlags
	agent.Register(flag.CommandLine)
	flag.Parse()
	s := zendeskfake.New()
	s.PerMinute, s.Out = *perMinute, os.Stdout
	s.SetLatency(*latency)
	s.AddAPIToken(*email, *token)
	if *hookURL != "" {
		s.WebhooksTo(*hookURL, *hookSecret).Log = os.Stdout
		fmt.Printf("zendeskserver: ticket events go to %s\n", *hookURL)
	}
	if agent.Share > 0 {
		s.Agent = s.NewAgent(agent.Share, agent.ReplyAfter, agent.SolveAfter)
	}
	fmt.Printf("zendeskserver on http://%s: API user %s/token\n", *addr, *email)
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
