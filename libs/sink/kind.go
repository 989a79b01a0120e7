package sink

import (
	"bytes"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/audit"
	"github.com/closedloop/closedloop/libs/kafkaio"
)

// Kind is one kind of destination (slack; the helpdesks and CRMs to come):
// the key of its section under `sinks:` in the pipeline file, and how its
// package turns that section into destinations. Adding a kind is its
// package, its fake in tools/, and one line in the hosting service's list
// (docs/destinations.md).
type Kind struct {
	// Name is the section's key ("slack").
	Name string
	// Instances decodes the section (with DecodeStrict: an unknown key is
	// an error naming it) and returns one Instance per destination.
	Instances func(section *yaml.Node, env KindEnv) ([]Instance, error)
}

// KindEnv is what a kind's destinations may use from the hosting service.
type KindEnv struct {
	// Redis holds checkpoints, disabled flags and cluster-wide rate limits.
	Redis redis.UniversalClient
	// RedisPrefix is the kind's key prefix ("closedloop:sink:slack:").
	RedisPrefix string
	// GroupPrefix is the consumer-group prefix ("closedloop-sink-webhook-").
	GroupPrefix string
	// LookupEnv resolves secret references.
	LookupEnv func(string) (string, bool)
	Log       *slog.Logger
	// Sink is the hosting service ("sink-webhook").
	Sink string
	// Records produces the records a kind writes besides deliveries (the
	// CRMs' unsubscribe propagations on Topics.Unsubscribes).
	Records Producer
	Topics  kafkaio.Topics
	// Audit records what a kind changes on someone's behalf (an opt-out).
	Audit *audit.Writer
}

// DecodeStrict decodes a pipeline-file section into v, refusing unknown
// keys (a misspelt setting must not be ignored).
func DecodeStrict(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// KindInstances makes the destinations of every section of sections whose
// kind is in kinds; a section of no known kind is an error naming it.
func KindInstances(kinds []Kind, sections map[string]yaml.Node, env KindEnv) ([]Instance, error) {
	byName := map[string]Kind{}
	var names []string
	for _, k := range kinds {
		byName[k.Name] = k
		names = append(names, k.Name)
	}
	keys := make([]string, 0, len(sections))
	for k := range sections {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []Instance
	for _, key := range keys {
		k, ok := byName[key]
		if !ok {
			return nil, fmt.Errorf("sinks.%s in the pipeline file: no destination kind %q (known: warehouse, webhook, %s)", key, key, strings.Join(names, ", "))
		}
		sec := sections[key]
		e := env
		e.RedisPrefix = env.RedisPrefix + k.Name + ":"
		ins, err := k.Instances(&sec, e)
		if err != nil {
			return nil, fmt.Errorf("sinks.%s: %w", key, err)
		}
		out = append(out, ins...)
	}
	return out, nil
}
