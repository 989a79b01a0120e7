// Command devbroker serves the Kafka wire protocol on loopback for
// development and tests, using github.com/twmb/franz-go/pkg/kfake. It is not
// Kafka: production deployments use real brokers, and closedloop's code uses
// nothing that only kfake does.
//
//	devbroker -brokers 3 -ports 9092,9093,9094 -data-dir .devstack/kafka \
//	          -topics feedback.raw.v1,feedback.normalized.v1 -partitions 3
//
// It prints one line "devbroker listening on <addr>,<addr>..." once the
// listeners exist (and writes the list to -addr-file, when given), then runs
// until SIGINT/SIGTERM, when it flushes the data directory and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

type options struct {
	brokers    int
	ports      []int
	dataDir    string
	topics     []string
	partitions int
	addrFile   string
	minSession time.Duration
	syncWrites bool
}

func parse(args []string) (options, error) {
	fs := flag.NewFlagSet("devbroker", flag.ContinueOnError)
	var o options
	var ports, topics string
	fs.IntVar(&o.brokers, "brokers", 1, "number of brokers: 1 or 3")
	fs.StringVar(&ports, "ports", "", "comma-separated ports, one per broker (default: random free ports)")
	fs.StringVar(&o.dataDir, "data-dir", "", "persist topics, offsets and groups here and reload them at start (default: in memory)")
	fs.StringVar(&topics, "topics", "", "comma-separated topics to create at start")
	fs.IntVar(&o.partitions, "partitions", 3, "partitions of each seeded topic")
	fs.StringVar(&o.addrFile, "addr-file", "", "write the comma-separated broker addresses to this file once listening")
	fs.DurationVar(&o.minSession, "group-min-session-timeout", 6*time.Second, "smallest consumer-group session timeout accepted (Kafka's default is 6s)")
	fs.BoolVar(&o.syncWrites, "sync-writes", false, "fsync every produced batch (with -data-dir)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.brokers != 1 && o.brokers != 3 {
		return o, fmt.Errorf("-brokers must be 1 or 3, got %d", o.brokers)
	}
	if ports != "" {
		for _, p := range strings.Split(ports, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || n < 0 || n > 65535 {
				return o, fmt.Errorf("-ports: %q is not a port", p)
			}
			o.ports = append(o.ports, n)
		}
		if len(o.ports) != o.brokers {
			return o, fmt.Errorf("-ports lists %d ports for %d brokers", len(o.ports), o.brokers)
		}
	}
	for _, t := range strings.Split(topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.topics = append(o.topics, t)
		}
	}
	if o.partitions < 1 {
		return o, errors.New("-partitions must be at least 1")
	}
	return o, nil
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	o, err := parse(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		log.Error("devbroker: bad arguments", "error", err.Error())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("devbroker failed", "error", err.Error())
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	opts := []kfake.Opt{
		kfake.NumBrokers(o.brokers),
		kfake.GroupMinSessionTimeout(o.minSession),
		kfake.DefaultNumPartitions(o.partitions),
	}
	if len(o.ports) > 0 {
		opts = append(opts, kfake.Ports(o.ports...))
	} else {
		// Port 0 on every broker: the kernel picks free ports.
		opts = append(opts, kfake.Ports(make([]int, o.brokers)...))
	}
	if o.dataDir != "" {
		if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
			return err
		}
		opts = append(opts, kfake.DataDir(o.dataDir))
		if o.syncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	if len(o.topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(o.partitions), o.topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	addrs := strings.Join(c.ListenAddrs(), ",")
	if o.addrFile != "" {
		tmp := o.addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(addrs+"\n"), 0o644); err != nil {
			c.Close()
			return err
		}
		if err := os.Rename(tmp, o.addrFile); err != nil {
			c.Close()
			return err
		}
	}
	fmt.Printf("devbroker listening on %s\n", addrs)
	log.Info("devbroker ready", "brokers", o.brokers, "addrs", addrs, "data_dir", o.dataDir, "seeded_topics", len(o.topics))
	<-ctx.Done()
	log.Info("devbroker stopping")
	c.Close()
	return nil
}
