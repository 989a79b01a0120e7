package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Topics are the names of the pipeline's topics. Build them with NewTopics so
// a prefix (one per environment or per test) applies to all of them.
type Topics struct {
	Raw        string
	Normalized string
	Enriched   string
	Priority   string
	Quarantine string
	// IngestTokens is the compacted, single-partition control topic of the
	// ingest tokens (see package ingesttokens).
	IngestTokens string
	prefix       string
}

// DLQ is the dead-letter topic of a sink service: "<prefix>feedback.dlq.<sink>.v1".
func (t Topics) DLQ(sink string) string { return t.prefix + "feedback.dlq." + sink + ".v1" }

// Replay is the replay topic of a sink service: "<prefix>feedback.replay.<sink>.v1".
// The admin service writes replayed events there; only that sink reads it.
func (t Topics) Replay(sink string) string { return t.prefix + "feedback.replay." + sink + ".v1" }

// Audit is the topic the admin service writes every mutating call to.
func (t Topics) Audit() string { return t.prefix + "closedloop.audit.v1" }

// Unsubscribes is where the CRM destinations record each unsubscribe's
// propagation (closedloop.sink.v1.Propagation, keyed by email): the
// compliance record sink-warehouse keeps and the admin lists.
func (t Topics) Unsubscribes() string { return t.prefix + "closedloop.unsubscribes.v1" }

// DLQState is the compacted control topic of dead-letter resolutions
// (replayed, discarded), keyed by dead-letter id.
func (t Topics) DLQState() string { return t.prefix + "closedloop.control.dlq-state.v1" }

// ReplayJobs is the compacted control topic of the admin service's range
// replay jobs, keyed by job id.
func (t Topics) ReplayJobs() string { return t.prefix + "closedloop.control.replay-jobs.v1" }

// BackfillJobs is the compacted control topic of the admin service's
// backfill and reconciliation jobs, with their cursors.
func (t Topics) BackfillJobs() string { return t.prefix + "closedloop.control.backfill-jobs.v1" }

// NewTopics returns the default topic names with prefix put in front
// (prefix "" gives "feedback.raw.v1", prefix "t42." gives "t42.feedback.raw.v1").
func NewTopics(prefix string) Topics {
	return Topics{
		Raw:          prefix + "feedback.raw.v1",
		Normalized:   prefix + "feedback.normalized.v1",
		Enriched:     prefix + "feedback.enriched.v1",
		Priority:     prefix + "feedback.enriched.priority.v1",
		Quarantine:   prefix + "feedback.quarantine.v1",
		IngestTokens: prefix + "closedloop.control.ingest-tokens.v1",
		prefix:       prefix,
	}
}

// All lists every data topic name (the control topics are created with
// their own settings by the packages that own them).
func (t Topics) All() []string {
	return []string{t.Raw, t.Normalized, t.Enriched, t.Priority, t.Quarantine}
}

// TopicSpec says how to create topics that are missing.
type TopicSpec struct {
	// Partitions per topic (default 3).
	Partitions int
	// ReplicationFactor (default 1; production uses 3).
	ReplicationFactor int
	// Configs are topic settings, e.g. cleanup.policy=compact.
	Configs map[string]string
	// Defs, when a created topic is among them, give its partitions and
	// settings (Topics.Defs: the one list of the deployment's topics).
	Defs []TopicDef
}

// EnsureTopics checks that every topic exists. Missing topics are created
// when create is true; otherwise the error names them and how to fix it.
// It retries for up to 30 s while the broker is not reachable yet.
func EnsureTopics(ctx context.Context, brokers []string, topics []string, create bool, spec TopicSpec) error {
	if spec.Partitions <= 0 {
		spec.Partitions = 3
	}
	if spec.ReplicationFactor <= 0 {
		spec.ReplicationFactor = 1
	}
	// Its own transport: the shared default one caches metadata that may
	// predate topics created meanwhile.
	client := NewClient(brokers, 5*time.Second)
	defer client.Transport.(*kafka.Transport).CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		missing, err := missingTopics(ctx, client, topics)
		if err == nil && len(missing) == 0 {
			return nil
		}
		if err = Explain(err); errors.Is(err, ErrKafkaAccess) {
			return err // credentials, certificates or ACLs: waiting cannot help
		}
		if err != nil {
			// A connection closed under the metadata request says little;
			// a login of its own says whether the brokers refuse us.
			if aerr := CheckAccess(ctx, brokers); errors.Is(aerr, ErrKafkaAccess) {
				return aerr
			}
		}
		if err == nil && !create {
			hint := ""
			if u := CurrentSecurity().User; u != "" {
				hint = " (or user " + u + " may not describe them: check its ACLs, docs/deploy.md)"
			}
			return fmt.Errorf("kafka topics %s do not exist on %s%s: create them with `admin topics apply` (docs/deploy.md) or set KAFKA_CREATE_TOPICS=true",
				strings.Join(missing, ", "), strings.Join(brokers, ","), hint)
		}
		if err == nil {
			req := &kafka.CreateTopicsRequest{}
			for _, t := range missing {
				tc := kafka.TopicConfig{Topic: t, NumPartitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor}
				configs := map[string]string{}
				for k, v := range spec.Configs {
					configs[k] = v
				}
				for _, d := range spec.Defs {
					if d.Name != t {
						continue
					}
					if d.Partitions > 0 {
						tc.NumPartitions = d.Partitions
					}
					for k, v := range d.Configs {
						configs[k] = v
					}
				}
				for _, k := range slices.Sorted(maps.Keys(configs)) {
					tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: configs[k]})
				}
				req.Topics = append(req.Topics, tc)
			}
			var resp *kafka.CreateTopicsResponse
			resp, err = client.CreateTopics(ctx, req)
			if err == nil {
				for t, terr := range resp.Errors {
					switch {
					case terr == nil || errors.Is(terr, kafka.TopicAlreadyExists):
					case errors.Is(terr, kafka.TopicAuthorizationFailed) || errors.Is(terr, kafka.ClusterAuthorizationFailed):
						return fmt.Errorf("%w: %s may not create topic %s (KAFKA_CREATE_TOPICS=true needs the Create ACL; in production create the topics beforehand, docs/deploy.md): %v",
							ErrKafkaAccess, principal(), t, terr)
					default:
						err = errors.Join(err, fmt.Errorf("create topic %s: %w", t, terr))
					}
				}
			}
			if err == nil {
				continue // check again: metadata may take a moment to show them
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("kafka at %s: %w (is the broker running and KAFKA_BROKERS right?)", strings.Join(brokers, ","), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func missingTopics(ctx context.Context, client *kafka.Client, topics []string) ([]string, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, err
	}
	var missing, denied []string
	found := map[string]bool{}
	for _, t := range md.Topics {
		if t.Error == nil && len(t.Partitions) > 0 {
			found[t.Name] = true
		}
		if errors.Is(t.Error, kafka.TopicAuthorizationFailed) {
			denied = append(denied, t.Name)
		}
	}
	if len(denied) > 0 {
		sort.Strings(denied)
		return nil, fmt.Errorf("%w: %s may not describe topics %s: grant this service's ACLs (docs/deploy.md)", ErrKafkaAccess, principal(), strings.Join(denied, ", "))
	}
	for _, t := range topics {
		if !found[t] {
			missing = append(missing, t)
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// principal names this process's Kafka user for messages.
func principal() string {
	if u := CurrentSecurity().User; u != "" {
		return "user " + u
	}
	return "this client (no SASL user)"
}

// Ping checks that at least one broker answers a metadata request; it is the
// "kafka" readiness check.
func Ping(brokers []string) func(ctx context.Context) error {
	client := NewClient(brokers, 2*time.Second)
	return func(ctx context.Context) error {
		_, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{}})
		var ne net.Error
		if errors.As(err, &ne) {
			return fmt.Errorf("broker unreachable: %w", err)
		}
		return err
	}
}
