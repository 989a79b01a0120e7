// Command devbroker serves the Kafka wire protocol on loopback for
// development and tests, using github.com/twmb/franz-go/pkg/kfake. It is not
// Kafka: production deployments use real brokers, and closedloop's code uses
// nothing that only kfake does.
//
//	devbroker -brokers 3 -ports 9092,9093,9094 -data-dir .devstack/kafka \
//	          -topics feedback.raw.v1,feedback.normalized.v1 -partitions 3
//
// With -tls-cert/-tls-key its listeners speak TLS; with -sasl-superuser they
// require a SASL login (PLAIN, SCRAM-SHA-256/512), -users adds users with
// ACLs and -acls checks them, as a secured production cluster does.
//
// It prints one line "devbroker listening on <addr>,<addr>..." once the
// listeners exist (and writes the list to -addr-file, when given), then runs
// until SIGINT/SIGTERM, when it flushes the data directory and exits.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
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
	"github.com/twmb/franz-go/pkg/kmsg"
)

type options struct {
	brokers int
	ports   []int
	dataDir string
	topics  []string
	// topicPartitions are the topics whose -topics entry gave their own
	// partition count (name:partitions).
	topicPartitions map[string]int
	partitions      int
	addrFile        string
	minSession      time.Duration
	syncWrites      bool
	// Security: TLS listeners, SASL users (a superuser and users with
	// ACLs), ACL checking.
	tlsCert, tlsKey string
	superuser       string // MECHANISM:USER:PASSWORD
	usersFile       string
	acls            bool
}

// usersFile is the -users file: SASL users, each with its ACLs.
type userSpec struct {
	Mechanism string    `json:"mechanism"`
	User      string    `json:"user"`
	Password  string    `json:"password"`
	ACLs      []aclSpec `json:"acls"`
}

type aclSpec struct {
	Resource   string   `json:"resource"` // topic, group, cluster, transactional_id
	Name       string   `json:"name"`
	Prefixed   bool     `json:"prefixed"`
	Operations []string `json:"operations"` // read, write, create, delete, alter, describe, describe_configs, alter_configs, all
	Deny       bool     `json:"deny"`
}

func parse(args []string) (options, error) {
	fs := flag.NewFlagSet("devbroker", flag.ContinueOnError)
	var o options
	var ports, topics string
	fs.IntVar(&o.brokers, "brokers", 1, "number of brokers: 1 or 3")
	fs.StringVar(&ports, "ports", "", "comma-separated ports, one per broker (default: random free ports)")
	fs.StringVar(&o.dataDir, "data-dir", "", "persist topics, offsets and groups here and reload them at start (default: in memory)")
	fs.StringVar(&topics, "topics", "", "comma-separated topics to create at start, each name or name:partitions")
	fs.IntVar(&o.partitions, "partitions", 3, "partitions of each seeded topic")
	fs.StringVar(&o.addrFile, "addr-file", "", "write the comma-separated broker addresses to this file once listening")
	fs.DurationVar(&o.minSession, "group-min-session-timeout", 6*time.Second, "smallest consumer-group session timeout accepted (Kafka's default is 6s)")
	fs.BoolVar(&o.syncWrites, "sync-writes", false, "fsync every produced batch (with -data-dir)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate of the TLS listeners (with -tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of the TLS listeners")
	fs.StringVar(&o.superuser, "sasl-superuser", "", "enable SASL with this superuser: MECHANISM:USER:PASSWORD (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
	fs.StringVar(&o.usersFile, "users", "", "JSON file of SASL users and their ACLs: [{mechanism, user, password, acls: [{resource, name, prefixed, operations}]}]")
	fs.BoolVar(&o.acls, "acls", false, "check ACLs (the superuser bypasses them)")
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
	o.topicPartitions = map[string]int{}
	for _, t := range strings.Split(topics, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		name, n, hasN := strings.Cut(t, ":")
		if hasN {
			p, err := strconv.Atoi(n)
			if err != nil || p < 1 {
				return o, fmt.Errorf("-topics: %q: the partitions after ':' must be a positive number", t)
			}
			o.topicPartitions[name] = p
		}
		o.topics = append(o.topics, name)
	}
	if o.partitions < 1 {
		return o, errors.New("-partitions must be at least 1")
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, errors.New("-tls-cert and -tls-key go together")
	}
	if (o.usersFile != "" || o.acls) && o.superuser == "" {
		return o, errors.New("-users and -acls need -sasl-superuser")
	}
	return o, nil
}

var (
	resources = map[string]kmsg.ACLResourceType{"topic": kmsg.ACLResourceTypeTopic, "group": kmsg.ACLResourceTypeGroup,
		"cluster": kmsg.ACLResourceTypeCluster, "transactional_id": kmsg.ACLResourceTypeTransactionalId}
	operations = map[string]kmsg.ACLOperation{"all": kmsg.ACLOperationAll, "read": kmsg.ACLOperationRead, "write": kmsg.ACLOperationWrite,
		"create": kmsg.ACLOperationCreate, "delete": kmsg.ACLOperationDelete, "alter": kmsg.ACLOperationAlter,
		"describe": kmsg.ACLOperationDescribe, "describe_configs": kmsg.ACLOperationDescribeConfigs,
		"alter_configs": kmsg.ACLOperationAlterConfigs, "cluster_action": kmsg.ACLOperationClusterAction}
)

// securityOpts are the kfake options of the TLS, SASL and ACL flags.
func securityOpts(o options) ([]kfake.Opt, error) {
	var opts []kfake.Opt
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
		}
		opts = append(opts, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}
	if o.superuser == "" {
		return opts, nil
	}
	parts := strings.SplitN(o.superuser, ":", 3)
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return nil, errors.New("-sasl-superuser is MECHANISM:USER:PASSWORD")
	}
	opts = append(opts, kfake.EnableSASL(), kfake.Superuser(parts[0], parts[1], parts[2]))
	if o.acls {
		opts = append(opts, kfake.EnableACLs())
	}
	if o.usersFile == "" {
		return opts, nil
	}
	b, err := os.ReadFile(o.usersFile)
	if err != nil {
		return nil, err
	}
	var users []userSpec
	if err := json.Unmarshal(b, &users); err != nil {
		return nil, fmt.Errorf("-users %s: %w", o.usersFile, err)
	}
	for _, u := range users {
		var acls []kfake.ACL
		for _, a := range u.ACLs {
			rt, ok := resources[a.Resource]
			if !ok {
				return nil, fmt.Errorf("-users: user %s: resource %q: use topic, group, cluster or transactional_id", u.User, a.Resource)
			}
			pattern := kmsg.ACLResourcePatternTypeLiteral
			if a.Prefixed {
				pattern = kmsg.ACLResourcePatternTypePrefixed
			}
			for _, op := range a.Operations {
				ko, ok := operations[op]
				if !ok {
					return nil, fmt.Errorf("-users: user %s: operation %q", u.User, op)
				}
				acls = append(acls, kfake.ACL{Resource: rt, Name: a.Name, Pattern: pattern, Operation: ko, Allow: !a.Deny})
			}
		}
		opts = append(opts, kfake.User(u.Mechanism, u.User, u.Password, acls...))
	}
	return opts, nil
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
	for _, t := range o.topics {
		n, own := o.topicPartitions[t]
		if !own {
			n = o.partitions
		}
		opts = append(opts, kfake.SeedTopics(int32(n), t))
	}
	sec, err := securityOpts(o)
	if err != nil {
		return err
	}
	opts = append(opts, sec...)
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
	log.Info("devbroker ready", "brokers", o.brokers, "addrs", addrs, "data_dir", o.dataDir, "seeded_topics", len(o.topics),
		"tls", o.tlsCert != "", "sasl", o.superuser != "", "acls", o.acls)
	<-ctx.Done()
	log.Info("devbroker stopping")
	c.Close()
	return nil
}
