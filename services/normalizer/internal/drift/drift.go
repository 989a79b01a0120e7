// Package drift notices schema drift: per provider and event type it keeps
// the set of field paths seen in webhook bodies, and records a path never
// seen before — counted in closedloop_normalizer_schema_drift_total and
// stored in Redis with the id and time of the first event that carried it,
// for the admin API to list. Array indices are folded ("answers[].id") so a
// longer list is not drift.
package drift

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Tracker records new field paths. It is safe for concurrent use.
type Tracker struct {
	rdb    redis.UniversalClient
	prefix string
	mu     sync.RWMutex
	seen   map[string]map[string]bool // "<provider>/<event type>" -> paths
	newOne metric.Int64Counter
}

// New returns a tracker storing under prefix ("closedloop:drift:").
func New(rdb redis.UniversalClient, prefix string) *Tracker {
	t := &Tracker{rdb: rdb, prefix: prefix, seen: map[string]map[string]bool{}}
	t.newOne, _ = otel.Meter("github.com/closedloop/closedloop/services/normalizer").Int64Counter("closedloop.normalizer.schema_drift",
		metric.WithDescription("Field paths seen for the first time, by provider and event type."))
	return t
}

// Paths lists the folded field paths of a JSON body, sorted; nil when the
// body is not valid JSON.
func Paths(body []byte) []string {
	set := map[string]bool{}
	if !scanPaths(body, func(p []byte) { set[string(p)] = true }) {
		return nil
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Observe records the paths of one event's body. New paths (new to this
// process) are written to Redis with HSETNX, so the first event id that
// carried a path anywhere is kept; it returns the paths Redis had not seen.
// A Redis failure is returned but loses nothing: the paths are retried with
// the next event that carries them. A body whose paths are all known costs
// one scan and no allocation.
func (t *Tracker) Observe(ctx context.Context, provider, eventType, eventID string, body []byte) ([]string, error) {
	key := provider + "/" + eventType
	var fresh []string
	t.mu.RLock()
	known := t.seen[key]
	scanPaths(body, func(p []byte) {
		if !known[string(p)] && !slices.Contains(fresh, string(p)) {
			fresh = append(fresh, string(p))
		}
	})
	t.mu.RUnlock()
	if len(fresh) == 0 {
		return nil, nil
	}
	value := eventID + " " + strconv.FormatInt(time.Now().Unix(), 10)
	pipe := t.rdb.Pipeline()
	cmds := make([]*redis.BoolCmd, len(fresh))
	for i, p := range fresh {
		cmds[i] = pipe.HSetNX(ctx, t.prefix+key, p, value)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	var drifted []string
	t.mu.Lock()
	if t.seen[key] == nil {
		t.seen[key] = map[string]bool{}
	}
	for i, p := range fresh {
		t.seen[key][p] = true
		if cmds[i].Val() {
			drifted = append(drifted, p)
		}
	}
	t.mu.Unlock()
	if len(drifted) > 0 {
		t.newOne.Add(ctx, int64(len(drifted)), metric.WithAttributes(attribute.String("provider", provider), attribute.String("event_type", eventType)))
	}
	return drifted, nil
}

// Seen is one recorded path.
type Seen struct {
	Provider     string
	EventType    string
	Path         string
	FirstEventID string
	FirstSeen    time.Time
}

// List returns the recorded paths of one provider's event type (both empty:
// of every one; provider alone: of its every type), sorted by provider,
// event type and path. Hashes are found with SCAN, never KEYS.
func (t *Tracker) List(ctx context.Context, provider, eventType string) ([]Seen, error) {
	var keys []string
	if provider != "" && eventType != "" {
		keys = []string{t.prefix + provider + "/" + eventType}
	} else {
		pattern := t.prefix + escapeGlob(provider) + "*"
		if provider != "" {
			pattern = t.prefix + escapeGlob(provider) + "/*"
		}
		iter := t.rdb.Scan(ctx, 0, pattern, 500).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return nil, err
		}
	}
	var out []Seen
	for _, key := range keys {
		prov, typ, ok := strings.Cut(strings.TrimPrefix(key, t.prefix), "/")
		if !ok {
			continue
		}
		m, err := t.rdb.HGetAll(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		for p, v := range m {
			id, ts, _ := strings.Cut(v, " ")
			sec, _ := strconv.ParseInt(ts, 10, 64)
			out = append(out, Seen{Provider: prov, EventType: typ, Path: p, FirstEventID: id, FirstSeen: time.Unix(sec, 0).UTC()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out, nil
}

// key orders entries; "\x00" sorts before every character of a name.
func (s Seen) key() string { return s.Provider + "\x00" + s.EventType + "\x00" + s.Path }

// escapeGlob quotes the characters SCAN's MATCH treats as a pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^-`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
