package ingesttokens

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/closedloop/closedloop/libs/kafkaio"
)

func follow(t *testing.T, addrs []string, topic string) *Store {
	t.Helper()
	s := NewStore(addrs, topic, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not happen within 5s", what)
	return 0
}

func TestATokenIssuedOnOneReplicaWorksOnAnotherAndStopsAfterRevocation(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	const topic = "ctl.tokens"
	ctx := context.Background()
	if err := kafkaio.EnsureTopics(ctx, addrs, []string{topic}, true, TopicSpec(1)); err != nil {
		t.Fatal(err)
	}
	p := kafkaio.NewProducer(kafkaio.ProducerConfig{Brokers: addrs})
	defer p.Close()

	a, b := follow(t, addrs, topic), follow(t, addrs, topic)
	eventually(t, "both replicas ready on an empty topic", func() bool { return a.Ready() && b.Ready() })

	tok1, t1, err := a.Issue(ctx, p, "delighted", "test")
	if err != nil {
		t.Fatal(err)
	}
	took := eventually(t, "replica b accepting the new token", func() bool { return b.Match("delighted", tok1) })
	t.Logf("a token issued through replica a worked on replica b after %s", took)
	if b.Match("other", tok1) || b.Match("delighted", tok1+"x") {
		t.Fatal("a token matched another source or a changed token")
	}
	tok2, _, err := a.Issue(ctx, p, "delighted", "test")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica a seeing both tokens", func() bool { return len(a.Active("delighted")) == 2 })
	if _, _, err := a.Issue(ctx, p, "delighted", "test"); !errors.Is(err, ErrTooMany) {
		t.Fatalf("a third token: %v, want ErrTooMany", err)
	}
	if err := a.Revoke(ctx, p, "delighted", t1.ID); err != nil {
		t.Fatal(err)
	}
	took = eventually(t, "replica b refusing the revoked token", func() bool { return !b.Match("delighted", tok1) })
	t.Logf("a revocation reached replica b after %s", took)
	if !b.Match("delighted", tok2) {
		t.Fatal("revoking one token revoked the other")
	}

	// A replica started later reads the same state from the beginning.
	late := follow(t, addrs, topic)
	eventually(t, "a late replica ready", late.Ready)
	if late.Match("delighted", tok1) || !late.Match("delighted", tok2) {
		t.Fatal("a late replica does not see the current tokens")
	}
}
