// Command slackserver is the local Slack of `make run` and the tests
// (package slackfake): an incoming webhook and chat.postMessage with a bot
// token, about one message a second per channel, failures on command
// (POST /control/fail, /control/archive), the messages at GET
// /control/messages. Each accepted message is printed.
//
//	slackserver -addr 127.0.0.1:8099 -channel C0CLOSEDLOOP
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	slackfake "github.com/closedloop/closedloop/tools/fakes/slack"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8099", "listen address")
	channel := flag.String("channel", "C0CLOSEDLOOP", "the channel the webhook posts to")
	path := flag.String("webhook-path", "/services/T0DEV/B0DEV/devwebhooksecret", "the incoming webhook's path")
	token := flag.String("token", "xoxb-dev-0123456789", "a bot token chat.postMessage accepts")
	rate := flag.Float64("rate", 1, "messages per second per channel (429 past it)")
	burst := flag.Int("burst", 3, "burst per channel")
	flag.Parse()
	s := slackfake.New()
	s.Rate, s.Burst, s.Out = *rate, *burst, os.Stdout
	s.AddWebhookPath(*channel, *path)
	s.AddToken(*token)
	fmt.Printf("slackserver on http://%s: webhook http://%s%s → #%s; chat.postMessage with %q\n", *addr, *addr, *path, *channel, *token)
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
