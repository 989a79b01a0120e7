package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// TopicDef is one topic of a deployment as it must be: the one list (Defs)
// that `admin topics plan|apply`, the services' KAFKA_CREATE_TOPICS, the
// devstack and the tests create topics from.
type TopicDef struct {
	Name    string
	Purpose string
	// Partitions: 0 is the deployment's default (KAFKA_TOPIC_PARTITIONS).
	Partitions int
	// Configs are the topic settings it needs (cleanup policy, retention).
	Configs map[string]string
}

// Retention of the topics that hold what someone acts on later: dead
// letters and quarantined records wait for an operator's fix and replay;
// the audit trail is kept over a year.
const (
	DLQRetention        = 30 * 24 * time.Hour
	QuarantineRetention = 30 * 24 * time.Hour
	AuditRetention      = 400 * 24 * time.Hour
)

// ControlConfigs are the settings of the compacted, single-partition
// control topics (ingest tokens, dead-letter resolutions, replay jobs): the
// latest record per key is the state.
func ControlConfigs() map[string]string {
	return map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "3600000"}
}

func retention(d time.Duration) map[string]string {
	return map[string]string{"cleanup.policy": "delete", "retention.ms": strconv.FormatInt(d.Milliseconds(), 10)}
}

// SinkServices are the sink services, each with its dead-letter and replay
// topics.
var SinkServices = []string{"sink-warehouse", "sink-webhook", "sink-console"}

// Defs lists every topic of a deployment whose sink services are sinks.
func (t Topics) Defs(sinks ...string) []TopicDef {
	out := []TopicDef{
		{Name: t.Raw, Purpose: "verified webhooks (RawWebhook), keyed by event id"},
		{Name: t.Normalized, Purpose: "FeedbackEvents, keyed by subject: the public contract"},
		{Name: t.Enriched, Purpose: "enriched FeedbackEvents, standard lane"},
		{Name: t.Priority, Purpose: "enriched FeedbackEvents, priority lane"},
		{Name: t.Quarantine, Purpose: "records the normalizer or enricher cannot use, with the reason", Configs: retention(QuarantineRetention)},
		{Name: t.IngestTokens, Purpose: "ingest tokens (control, compacted)", Partitions: 1, Configs: ControlConfigs()},
		{Name: t.DLQState(), Purpose: "dead-letter resolutions (control, compacted)", Partitions: 1, Configs: ControlConfigs()},
		{Name: t.ReplayJobs(), Purpose: "replay jobs (control, compacted)", Partitions: 1, Configs: ControlConfigs()},
		{Name: t.BackfillJobs(), Purpose: "backfill and reconciliation jobs (control, compacted)", Partitions: 1, Configs: ControlConfigs()},
		{Name: t.Audit(), Purpose: "every mutation of every service, who and when", Configs: retention(AuditRetention)},
		{Name: t.Unsubscribes(), Purpose: "each unsubscribe's propagation to each CRM (Propagation), keyed by email", Configs: retention(AuditRetention)},
	}
	for _, s := range sinks {
		out = append(out,
			TopicDef{Name: t.DLQ(s), Purpose: s + "'s dead letters", Configs: retention(DLQRetention)},
			TopicDef{Name: t.Replay(s), Purpose: "events replayed to " + s})
	}
	return out
}

// Everything lists the names of Defs.
func (t Topics) Everything(sinks ...string) []string {
	var out []string
	for _, d := range t.Defs(sinks...) {
		out = append(out, d.Name)
	}
	return out
}

// Layout is how a deployment's topics are laid out on its cluster.
type Layout struct {
	// Partitions of a topic whose def leaves it to the deployment.
	Partitions int
	// Replication of every topic; MinInsync its min.insync.replicas
	// (default: 2 from 3 replicas up, else 1).
	Replication, MinInsync int
}

func (l Layout) normalized() Layout {
	if l.Partitions <= 0 {
		l.Partitions = 3
	}
	if l.Replication <= 0 {
		l.Replication = 1
	}
	if l.MinInsync <= 0 {
		l.MinInsync = 1
		if l.Replication >= 3 {
			l.MinInsync = 2
		}
	}
	return l
}

// want is a def's partitions and settings under a layout.
func (l Layout) want(d TopicDef) (int, map[string]string) {
	n := d.Partitions
	if n <= 0 {
		n = l.Partitions
	}
	cfg := map[string]string{"min.insync.replicas": strconv.Itoa(l.MinInsync)}
	for k, v := range d.Configs {
		cfg[k] = v
	}
	return n, cfg
}

// Change kinds of a plan.
const (
	ChangeNone          = "ok"
	ChangeCreate        = "create"
	ChangeAddPartitions = "add partitions"
	ChangeConfigs       = "set configs"
	// ChangeManual is what apply cannot do (fewer partitions, another
	// replication factor): the plan says what to do by hand.
	ChangeManual = "manual"
)

// TopicChange is one line of a plan.
type TopicChange struct {
	Topic, Kind, Detail string
	def                 TopicDef
	partitions          int
	configs             map[string]string
}

// PlanTopics compares defs under layout with the cluster: what is missing,
// has too few partitions or other settings. Nothing is changed.
func PlanTopics(ctx context.Context, brokers []string, defs []TopicDef, layout Layout) ([]TopicChange, error) {
	layout = layout.normalized()
	client := NewClient(brokers, 10*time.Second)
	defer client.Transport.(*kafka.Transport).CloseIdleConnections()
	names := make([]string, len(defs))
	for i, d := range defs {
		names[i] = d.Name
	}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		if aerr := CheckAccess(ctx, brokers); errors.Is(aerr, ErrKafkaAccess) {
			return nil, aerr
		}
		return nil, Explain(err)
	}
	have := map[string]kafka.Topic{}
	for _, t := range md.Topics {
		if errors.Is(t.Error, kafka.TopicAuthorizationFailed) {
			return nil, fmt.Errorf("%w: %s may not describe topic %s", ErrKafkaAccess, principal(), t.Name)
		}
		if t.Error == nil && len(t.Partitions) > 0 {
			have[t.Name] = t
		}
	}
	req := &kafka.DescribeConfigsRequest{}
	for _, d := range defs {
		if _, ok := have[d.Name]; ok {
			req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: d.Name})
		}
	}
	current := map[string]map[string]string{}
	if len(req.Resources) > 0 {
		resp, err := client.DescribeConfigs(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("describe the topics' configs: %w", Explain(err))
		}
		for _, r := range resp.Resources {
			if r.Error != nil {
				return nil, fmt.Errorf("describe the configs of %s: %w", r.ResourceName, r.Error)
			}
			m := map[string]string{}
			for _, e := range r.ConfigEntries {
				m[e.ConfigName] = e.ConfigValue
			}
			current[r.ResourceName] = m
		}
	}
	var out []TopicChange
	for _, d := range defs {
		n, cfg := layout.want(d)
		c := TopicChange{Topic: d.Name, def: d, partitions: n, configs: cfg}
		t, exists := have[d.Name]
		switch {
		case !exists:
			c.Kind, c.Detail = ChangeCreate, fmt.Sprintf("%d partitions, replication %d, %s", n, layout.Replication, fmtConfigs(cfg))
			out = append(out, c)
			continue
		case len(t.Partitions) > n:
			c.Kind, c.Detail = ChangeManual, fmt.Sprintf("has %d partitions, wants %d: Kafka cannot remove partitions (keep them, or recreate the topic empty)", len(t.Partitions), n)
			out = append(out, c)
			continue
		case len(t.Partitions[0].Replicas) > 0 && len(t.Partitions[0].Replicas) != layout.Replication:
			c.Kind, c.Detail = ChangeManual, fmt.Sprintf("replication %d, wants %d: reassign its partitions (kafka-reassign-partitions)", len(t.Partitions[0].Replicas), layout.Replication)
			out = append(out, c)
			continue
		case len(t.Partitions) < n:
			c.Kind, c.Detail = ChangeAddPartitions, fmt.Sprintf("%d → %d (a key's records before and after may sit on different partitions)", len(t.Partitions), n)
			out = append(out, c)
		}
		var drift []string
		for _, k := range slices.Sorted(maps.Keys(cfg)) {
			if cur := current[d.Name][k]; cur != cfg[k] {
				drift = append(drift, fmt.Sprintf("%s %s → %s", k, orNone(cur), cfg[k]))
			}
		}
		if len(drift) > 0 {
			out = append(out, TopicChange{Topic: d.Name, Kind: ChangeConfigs, Detail: strings.Join(drift, ", "), def: d, partitions: n, configs: cfg})
		}
		if len(t.Partitions) == n && len(drift) == 0 {
			c.Kind, c.Detail = ChangeNone, fmt.Sprintf("%d partitions, %s", n, fmtConfigs(cfg))
			out = append(out, c)
		}
	}
	return out, nil
}

// ApplyTopics makes the changes of a plan that can be made (creations, more
// partitions, settings) and returns the manual ones it left.
func ApplyTopics(ctx context.Context, brokers []string, plan []TopicChange, layout Layout) (manual []TopicChange, err error) {
	layout = layout.normalized()
	client := NewClient(brokers, 30*time.Second)
	defer client.Transport.(*kafka.Transport).CloseIdleConnections()
	create := &kafka.CreateTopicsRequest{}
	parts := &kafka.CreatePartitionsRequest{}
	alter := &kafka.IncrementalAlterConfigsRequest{}
	for _, c := range plan {
		switch c.Kind {
		case ChangeCreate:
			tc := kafka.TopicConfig{Topic: c.Topic, NumPartitions: c.partitions, ReplicationFactor: layout.Replication}
			for _, k := range slices.Sorted(maps.Keys(c.configs)) {
				tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: c.configs[k]})
			}
			create.Topics = append(create.Topics, tc)
		case ChangeAddPartitions:
			parts.Topics = append(parts.Topics, kafka.TopicPartitionsConfig{Name: c.Topic, Count: int32(c.partitions)})
		case ChangeConfigs:
			r := kafka.IncrementalAlterConfigsRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: c.Topic}
			for _, k := range slices.Sorted(maps.Keys(c.configs)) {
				r.Configs = append(r.Configs, kafka.IncrementalAlterConfigsRequestConfig{Name: k, Value: c.configs[k], ConfigOperation: kafka.ConfigOperationSet})
			}
			alter.Resources = append(alter.Resources, r)
		case ChangeManual:
			manual = append(manual, c)
		}
	}
	var errs []error
	if len(create.Topics) > 0 {
		resp, err := client.CreateTopics(ctx, create)
		if err != nil {
			return manual, fmt.Errorf("create topics: %w", Explain(err))
		}
		for t, e := range resp.Errors {
			if e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
				errs = append(errs, fmt.Errorf("create %s: %w", t, e))
			}
		}
	}
	if len(parts.Topics) > 0 {
		resp, err := client.CreatePartitions(ctx, parts)
		if err != nil {
			return manual, fmt.Errorf("add partitions: %w", Explain(err))
		}
		for _, e := range resp.Errors {
			if e != nil {
				errs = append(errs, fmt.Errorf("add partitions: %w", e))
			}
		}
	}
	if len(alter.Resources) > 0 {
		resp, err := client.IncrementalAlterConfigs(ctx, alter)
		if err != nil {
			return manual, fmt.Errorf("set configs: %w", Explain(err))
		}
		for _, r := range resp.Resources {
			if r.Error != nil {
				errs = append(errs, fmt.Errorf("set configs of %s: %w", r.ResourceName, r.Error))
			}
		}
	}
	return manual, errors.Join(errs...)
}

func fmtConfigs(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

func orNone(s string) string {
	if s == "" {
		return "(unset)"
	}
	return s
}
