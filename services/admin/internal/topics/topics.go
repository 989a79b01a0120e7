// Package topics is `admin topics plan|apply`: every topic the deployment
// needs (kafkaio.Topics.Defs, the code's own list) with its partitions,
// replication, min.insync.replicas, cleanup policy and retention, compared
// with a running cluster (plan) and made so (apply). Compose's init
// container, the Helm chart's pre-install/pre-upgrade Job and the devstack
// run it; the services then start without KAFKA_CREATE_TOPICS.
package topics

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitUsage   = 2
	ExitChanges = 3 // plan -check: changes are pending
	ExitManual  = 5 // apply: changes left to be made by hand
)

const usage = `admin topics plan|apply [flags]

Every topic closedloop needs, from the code's own list, with its partitions, replication,
min.insync.replicas, cleanup policy and retention:
  plan    compare them with the cluster and print what apply would do (nothing is changed)
  apply   create what is missing, add partitions, set the settings that differ

The cluster and its security come from the services' variables: KAFKA_BROKERS, KAFKA_TLS_*,
KAFKA_SASL_* (the user needs Create, Alter, AlterConfigs and DescribeConfigs on the topics),
CLOSEDLOOP_TOPIC_PREFIX, KAFKA_TOPIC_PARTITIONS (default 3), KAFKA_TOPIC_REPLICATION (default 1),
KAFKA_MIN_INSYNC_REPLICAS (default 2 from 3 replicas, else 1).

Exit codes: 0 done (plan: nothing or changes listed), 1 failed, 2 usage, 3 plan -check found
changes, 5 apply left changes that need a person (fewer partitions, another replication).
`

// Main runs the command with args (after "topics") and returns its exit code.
func Main(args []string, env *config.Env, out, errOut io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(out, usage)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	verb := args[0]
	fs := flag.NewFlagSet("topics "+verb, flag.ContinueOnError)
	fs.SetOutput(errOut)
	sinks := fs.String("sinks", strings.Join(kafkaio.SinkServices, ","), "the sink services deployed (their dead-letter and replay topics)")
	check := fs.Bool("check", false, "plan: exit 3 when changes are pending")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if verb != "plan" && verb != "apply" || fs.NArg() > 0 {
		fmt.Fprint(errOut, usage)
		return ExitUsage
	}
	brokers := env.List("KAFKA_BROKERS", nil)
	if len(brokers) == 0 {
		env.Errorf("KAFKA_BROKERS is not set: it must list the Kafka brokers as host:port,host:port")
	}
	sec := kafkaio.LoadSecurity(env)
	layout := kafkaio.Layout{Partitions: env.Int("KAFKA_TOPIC_PARTITIONS", 3), Replication: env.Int("KAFKA_TOPIC_REPLICATION", 1),
		MinInsync: env.Int("KAFKA_MIN_INSYNC_REPLICAS", 0)}
	t := kafkaio.NewTopics(env.String("CLOSEDLOOP_TOPIC_PREFIX", ""))
	var sinkList []string
	for _, s := range strings.Split(*sinks, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		known := false
		for _, k := range kafkaio.SinkServices {
			known = known || k == s
		}
		if !known {
			env.Errorf("-sinks: %q is not a sink service (%s)", s, strings.Join(kafkaio.SinkServices, ", "))
		}
		sinkList = append(sinkList, s)
	}
	if layout.MinInsync > layout.Replication && layout.Replication > 0 {
		env.Errorf("KAFKA_MIN_INSYNC_REPLICAS=%d is more than KAFKA_TOPIC_REPLICATION=%d: no write could succeed", layout.MinInsync, layout.Replication)
	}
	if err := env.Err(); err != nil {
		fmt.Fprintln(errOut, "admin topics:", err)
		return ExitUsage
	}
	kafkaio.UseSecurity(sec)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	defs := t.Defs(sinkList...)
	plan, err := kafkaio.PlanTopics(ctx, brokers, defs, layout)
	if err != nil {
		fmt.Fprintln(errOut, "admin topics:", err)
		return ExitFailed
	}
	pending := printPlan(out, plan)
	if verb == "plan" {
		switch {
		case pending == 0:
			fmt.Fprintf(out, "\n%d topics, all as they should be\n", len(defs))
		default:
			fmt.Fprintf(out, "\n%d changes pending: admin topics apply makes them\n", pending)
			if *check {
				return ExitChanges
			}
		}
		return ExitOK
	}
	if pending == 0 {
		fmt.Fprintf(out, "\n%d topics, all as they should be: nothing to apply\n", len(defs))
		return ExitOK
	}
	manual, err := kafkaio.ApplyTopics(ctx, brokers, plan, layout)
	if err != nil {
		fmt.Fprintln(errOut, "admin topics apply:", err)
		return ExitFailed
	}
	if len(manual) > 0 {
		fmt.Fprintf(out, "\napplied what can be; %d changes need a person (see \"manual\" above)\n", len(manual))
		return ExitManual
	}
	fmt.Fprintf(out, "\napplied %d changes\n", pending)
	return ExitOK
}

// printPlan prints the plan and returns how many changes it holds.
func printPlan(out io.Writer, plan []kafkaio.TopicChange) int {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TOPIC\tCHANGE\tDETAIL")
	n := 0
	for _, c := range plan {
		if c.Kind != kafkaio.ChangeNone {
			n++
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", c.Topic, c.Kind, c.Detail)
	}
	_ = w.Flush()
	return n
}
