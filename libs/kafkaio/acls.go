package kafkaio

import (
	"fmt"
	"sort"
	"strings"
)

// Grant is one ACL binding a service needs: operations on a topic, a
// consumer group (or every group with a prefix), or the cluster.
type Grant struct {
	Resource   string // "topic", "group", "cluster"
	Name       string
	Prefixed   bool
	Operations []string // read, write, describe, describe_configs, create
}

// Kafka operations of the grants.
const (
	OpRead            = "read"
	OpWrite           = "write"
	OpDescribe        = "describe"
	OpDescribeConfigs = "describe_configs"
	OpCreate          = "create"
	OpAlter           = "alter"
	OpAlterConfigs    = "alter_configs"
)

// Groups are the consumer groups of a deployment (the services' *_GROUP
// settings): sink-webhook's is the prefix of its destinations' groups.
type Groups struct {
	Normalizer, Enricher, SinkWarehouse, SinkConsole, SinkWebhook string
}

// DefaultGroups are the groups when no *_GROUP variable is set.
func DefaultGroups() Groups {
	return Groups{Normalizer: "closedloop-normalizer", Enricher: "closedloop-enricher", SinkWarehouse: "closedloop-sink-warehouse",
		SinkConsole: "closedloop-sink-console", SinkWebhook: "closedloop-sink-webhook"}
}

// Services are the principals ServiceGrants knows: the services in
// pipeline order, then "topics" (`admin topics apply`, the Helm hook Job)
// and "keda" (the autoscaler reading the consumer groups' lag).
var Services = []string{"ingress", "normalizer", "enricher", "sink-warehouse", "sink-webhook", "sink-console", "admin", "topics", "keda"}

// ServiceGrants are the least-privilege ACLs of a service with topics t and
// groups g: what its code reads, writes and describes, nothing more (no
// Create: in production the topics are made beforehand, docs/deploy.md).
// Every service describes its topics and their configs at start-up
// (max.message.bytes) and writes the audit topic. The end-to-end test that
// gives each service only these (TestEachServiceRunsWithOnlyItsACLs) proves
// they are enough.
func ServiceGrants(service string, t Topics, g Groups) ([]Grant, error) {
	var out []Grant
	if service == "topics" {
		// Every topic of the deployment: made, grown, its settings set.
		for _, d := range t.Defs(SinkServices...) {
			out = append(out, Grant{Resource: "topic", Name: d.Name, Operations: []string{OpDescribe, OpDescribeConfigs, OpCreate, OpAlter, OpAlterConfigs}})
		}
		return out, nil
	}
	topic := func(name string, ops ...string) {
		out = append(out, Grant{Resource: "topic", Name: name, Operations: append([]string{OpDescribe, OpDescribeConfigs}, ops...)})
	}
	group := func(name string, prefixed bool, ops ...string) {
		out = append(out, Grant{Resource: "group", Name: name, Prefixed: prefixed, Operations: ops})
	}
	if service == "keda" {
		// The lag: the consumed topics' end offsets, the groups' commits.
		for _, name := range []string{t.Raw, t.Normalized, t.Enriched, t.Priority} {
			out = append(out, Grant{Resource: "topic", Name: name, Operations: []string{OpDescribe}})
		}
		for _, grp := range []string{g.Normalizer, g.Enricher, g.SinkWarehouse} {
			out = append(out, Grant{Resource: "group", Name: grp, Operations: []string{OpDescribe}})
		}
		out = append(out, Grant{Resource: "group", Name: g.SinkWebhook + "-", Prefixed: true, Operations: []string{OpDescribe}})
		return out, nil
	}
	topic(t.Audit(), OpWrite)
	sink := func(name, grp string, prefixed bool) {
		topic(t.Enriched, OpRead)
		topic(t.Priority, OpRead)
		topic(t.Replay(name), OpRead)
		topic(t.DLQ(name), OpWrite)
		topic(t.Quarantine, OpWrite)
		group(grp, prefixed, OpRead, OpDescribe)
	}
	switch service {
	case "ingress":
		topic(t.Raw, OpWrite)
		topic(t.IngestTokens, OpRead)
	case "normalizer":
		topic(t.Raw, OpRead)
		topic(t.Normalized, OpWrite)
		topic(t.Quarantine, OpWrite)
		group(g.Normalizer, false, OpRead, OpDescribe)
	case "enricher":
		topic(t.Normalized, OpRead)
		topic(t.Enriched, OpWrite)
		topic(t.Priority, OpWrite)
		topic(t.Quarantine, OpWrite)
		group(g.Enricher, false, OpRead, OpDescribe)
	case "sink-warehouse":
		sink("sink-warehouse", g.SinkWarehouse, false)
		// The unsubscribe propagations, into their table.
		topic(t.Unsubscribes(), OpRead)
		group(g.SinkWarehouse+"-unsubscribes", false, OpRead, OpDescribe)
	case "sink-console":
		topic(t.Enriched, OpRead)
		topic(t.Priority, OpRead)
		topic(t.Quarantine, OpWrite)
		group(g.SinkConsole, false, OpRead, OpDescribe)
	case "sink-webhook":
		// One group per destination: <SINK_WEBHOOK_GROUP>-<name>.
		sink("sink-webhook", g.SinkWebhook+"-", true)
		// The CRM destinations record each unsubscribe's propagation.
		topic(t.Unsubscribes(), OpWrite)
	case "admin":
		// Range replays read raw into raw, and normalized into a sink's
		// replay topic; dead-letter replays write the replay topics; test
		// events are followed through every lane and dead-letter topic;
		// the control topics are its own; lag is every stage's offsets.
		topic(t.Raw, OpRead, OpWrite)
		topic(t.Normalized, OpRead)
		topic(t.Enriched, OpRead)
		topic(t.Priority, OpRead)
		for _, s := range []string{"sink-warehouse", "sink-webhook", "sink-console"} {
			topic(t.Replay(s), OpWrite)
			topic(t.DLQ(s), OpRead)
		}
		topic(t.IngestTokens, OpRead, OpWrite)
		topic(t.DLQState(), OpRead, OpWrite)
		topic(t.ReplayJobs(), OpRead, OpWrite)
		topic(t.BackfillJobs(), OpRead, OpWrite)
		topic(t.Unsubscribes(), OpRead)
		for _, grp := range []string{g.Normalizer, g.Enricher, g.SinkWarehouse, g.SinkConsole} {
			group(grp, false, OpDescribe)
		}
		group(g.SinkWebhook+"-", true, OpDescribe)
	default:
		return nil, fmt.Errorf("no service %q: one of %s", service, strings.Join(Services, ", "))
	}
	return out, nil
}

// KafkaACLCommands renders grants as kafka-acls.sh commands for principal
// User:<user>, one per grant, sorted.
func KafkaACLCommands(user string, grants []Grant) []string {
	var out []string
	for _, gr := range grants {
		var b strings.Builder
		fmt.Fprintf(&b, "kafka-acls.sh --bootstrap-server $BROKERS --command-config admin.properties --add --allow-principal User:%s", user)
		for _, op := range gr.Operations {
			b.WriteString(" --operation " + aclOp(op))
		}
		switch gr.Resource {
		case "topic":
			b.WriteString(" --topic " + gr.Name)
		case "group":
			b.WriteString(" --group " + gr.Name)
		case "cluster":
			b.WriteString(" --cluster")
		}
		if gr.Prefixed {
			b.WriteString(" --resource-pattern-type prefixed")
		}
		out = append(out, b.String())
	}
	sort.Strings(out)
	return out
}

func aclOp(op string) string {
	switch op {
	case OpDescribeConfigs:
		return "DescribeConfigs"
	case OpAlterConfigs:
		return "AlterConfigs"
	}
	return strings.ToUpper(op[:1]) + op[1:]
}

// ACLTable is the markdown table of every service's grants with topics t
// and groups g (docs/deploy.md holds it for the default names; a test keeps
// the two equal).
func ACLTable(t Topics, g Groups) string {
	var b strings.Builder
	b.WriteString("| service | resource | name | operations |\n| --- | --- | --- | --- |\n")
	for _, svc := range Services {
		grants, _ := ServiceGrants(svc, t, g)
		for _, gr := range grants {
			name := "`" + gr.Name + "`"
			if gr.Prefixed {
				name += " (prefix)"
			}
			ops := make([]string, len(gr.Operations))
			for i, op := range gr.Operations {
				ops[i] = aclOp(op)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", svc, gr.Resource, name, strings.Join(ops, ", "))
		}
	}
	return b.String()
}
