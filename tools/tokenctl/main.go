// Command tokenctl issues, lists and revokes the ingest tokens of webhook
// sources on the control topic that every ingress follows (until the admin
// API and closedloopctl take this over).
//
//	tokenctl -brokers localhost:9092 issue delighted     # prints the URL token once
//	tokenctl -brokers localhost:9092 list delighted
//	tokenctl -brokers localhost:9092 revoke delighted <token-id>
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/closedloop/closedloop/libs/ingesttokens"
	"github.com/closedloop/closedloop/libs/kafkaio"
)

func main() {
	brokers := flag.String("brokers", os.Getenv("KAFKA_BROKERS"), "Kafka brokers, host:port,... (default $KAFKA_BROKERS)")
	prefix := flag.String("topic-prefix", os.Getenv("CLOSEDLOOP_TOPIC_PREFIX"), "topic prefix (default $CLOSEDLOOP_TOPIC_PREFIX)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tokenctl [-brokers b] [-topic-prefix p] issue SOURCE | list SOURCE | revoke SOURCE TOKEN_ID")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(strings.Split(*brokers, ","), *prefix, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "tokenctl:", err)
		os.Exit(1)
	}
}

func run(brokers []string, prefix string, args []string) error {
	if len(brokers) == 0 || brokers[0] == "" {
		return errors.New("no brokers: pass -brokers or set KAFKA_BROKERS")
	}
	if len(args) < 2 || (args[0] == "revoke") != (len(args) == 3) || len(args) > 3 {
		flag.Usage()
		return errors.New("bad arguments")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := kafkaio.NewTopics(prefix).IngestTokens
	store := ingesttokens.NewStore(brokers, topic, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go func() { _ = store.Run(ctx) }()
	for !store.Ready() {
		if ctx.Err() != nil {
			return fmt.Errorf("could not read %s: is the broker reachable and the topic created (the ingress creates it)?", topic)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p := kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: brokers, ClientID: "tokenctl"})
	defer p.Close()
	source := args[1]
	switch args[0] {
	case "issue":
		by := "tokenctl"
		if u, err := user.Current(); err == nil {
			by += ":" + u.Username
		}
		tok, t, err := store.Issue(ctx, p, source, by)
		if err != nil {
			return err
		}
		fmt.Printf("token id %s issued for source %s. The token is shown only now:\n%s\nWebhook URL: https://<ingress>/v1/hooks/%s/%s\n", t.ID, source, tok, source, tok)
	case "list":
		for _, t := range store.Active(source) {
			fmt.Printf("%s  created %s by %s\n", t.ID, t.CreatedAt.Format(time.RFC3339), t.CreatedBy)
		}
	case "revoke":
		found := false
		for _, t := range store.Active(source) {
			found = found || t.ID == args[2]
		}
		if !found {
			return fmt.Errorf("source %s has no active token %s (see tokenctl list %s)", source, args[2], source)
		}
		if err := store.Revoke(ctx, p, source, args[2]); err != nil {
			return err
		}
		fmt.Printf("token %s of source %s revoked\n", args[2], source)
	default:
		flag.Usage()
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}
