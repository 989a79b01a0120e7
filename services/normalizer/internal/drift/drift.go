// Package drift notices schema drift: per provider and event type it keeps
// the set of field paths seen in webhook bodies, and records a path never
// seen before — counted in closedloop_normalizer_schema_drift_total and
// stored in Redis with the id and time of the first event that carried it,
// for the admin API to list. Array indices are folded ("answers[].id") so a
// longer list is not drift. The paths of the first event of a type ever
// seen are its baseline, not drift: a fresh deployment reports none.
package drift

import (
	"context"
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

// Tracker records new field paths. It is safe for concurrent use. What it
// keeps is bounded, whatever the bodies hold: paths per event type, event
// types per provider, the length of a path, and the time a record lives.
type Tracker struct {
	rdb    redis.UniversalClient
	prefix string
	lim    Limits
	mu     sync.RWMutex
	seen   map[string]map[string]bool // "<provider>/<event type>" -> paths
	types  map[string]int             // provider -> event types tracked
	newOne metric.Int64Counter
	capped metric.Int64Counter
}

// Limits bound drift tracking; zero values take the defaults.
type Limits struct {
	// PathsPerType is the most paths kept per provider and event type
	// (default 2000); past it new paths are counted as capped, not kept.
	PathsPerType int
	// TypesPerProvider is the most event types tracked per provider
	// (default 100); further types are tracked together as OtherType.
	TypesPerProvider int
	// MaxPathLength: longer paths are cut (default 256 bytes).
	MaxPathLength int
	// TTL of a record in Redis, renewed whenever its type gains a path
	// (default 30 days).
	TTL time.Duration
}

// OtherType is the event type of the types past Limits.TypesPerProvider
// (invented event types cannot create unbounded keys or metric series).
const OtherType = "(other)"

// New returns a tracker storing under prefix ("closedloop:drift:").
func New(rdb redis.UniversalClient, prefix string, lim Limits) *Tracker {
	if lim.PathsPerType <= 0 {
		lim.PathsPerType = 2000
	}
	if lim.TypesPerProvider <= 0 {
		lim.TypesPerProvider = 100
	}
	if lim.MaxPathLength <= 0 {
		lim.MaxPathLength = 256
	}
	if lim.TTL <= 0 {
		lim.TTL = 30 * 24 * time.Hour
	}
	t := &Tracker{rdb: rdb, prefix: prefix, lim: lim, seen: map[string]map[string]bool{}, types: map[string]int{}}
	meter := otel.Meter("github.com/closedloop/closedloop/services/normalizer")
	t.newOne, _ = meter.Int64Counter("closedloop.normalizer.schema_drift", metric.WithUnit("{path}"),
		metric.WithDescription("Field paths seen for the first time, by provider and event type."))
	t.capped, _ = meter.Int64Counter("closedloop.normalizer.schema_drift.capped", metric.WithUnit("{path}"),
		metric.WithDescription("New field paths not recorded because their event type reached its limit of paths, by provider."))
	return t
}

// typeKey returns the tracking key of an event type, folding the types past
// the provider's limit into OtherType.
func (t *Tracker) typeKey(provider, eventType string) (string, string) {
	key := provider + "/" + eventType
	t.mu.RLock()
	_, ok := t.seen[key]
	n := t.types[provider]
	t.mu.RUnlock()
	if ok || n < t.lim.TypesPerProvider {
		return key, eventType
	}
	return provider + "/" + OtherType, OtherType
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
// one scan and no allocation; any body costs time linear in its size.
func (t *Tracker) Observe(ctx context.Context, provider, eventType, eventID string, body []byte) ([]string, error) {
	key, eventType := t.typeKey(provider, eventType)
	var fresh []string
	var freshSet map[string]bool
	overflow := 0
	t.mu.RLock()
	known := t.seen[key]
	room := t.lim.PathsPerType - len(known)
	scanPaths(body, func(p []byte) {
		if len(p) > t.lim.MaxPathLength {
			p = p[:t.lim.MaxPathLength]
		}
		if known[string(p)] || freshSet[string(p)] {
			return
		}
		if len(fresh) >= room {
			overflow++
			return
		}
		if freshSet == nil {
			freshSet = map[string]bool{}
		}
		freshSet[string(p)] = true
		fresh = append(fresh, string(p))
	})
	t.mu.RUnlock()
	if overflow > 0 {
		t.capped.Add(ctx, int64(overflow), metric.WithAttributes(attribute.String("provider", provider)))
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	value := eventID + " " + strconv.FormatInt(time.Now().Unix(), 10)
	pipe := t.rdb.Pipeline()
	t.mu.RLock()
	newType := t.seen[key] == nil
	t.mu.RUnlock()
	var first *redis.BoolCmd
	if newType { // this process's first of the type: is it the first anywhere?
		first = pipe.HSetNX(ctx, t.prefix+key, baselineField, eventID)
	}
	cmds := make([]*redis.BoolCmd, len(fresh))
	for i, p := range fresh {
		cmds[i] = pipe.HSetNX(ctx, t.prefix+key, p, value)
	}
	pipe.Expire(ctx, t.prefix+key, t.lim.TTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	var drifted []string
	t.mu.Lock()
	if t.seen[key] == nil {
		t.seen[key] = map[string]bool{}
		t.types[provider]++
	}
	for i, p := range fresh {
		if len(t.seen[key]) >= t.lim.PathsPerType {
			break // another event of the type filled it meanwhile
		}
		t.seen[key][p] = true
		if cmds[i].Val() && (first == nil || !first.Val()) {
			drifted = append(drifted, p)
		}
	}
	t.mu.Unlock()
	if len(drifted) > 0 {
		// The attribute set outlives the call; the type may share its
		// webhook's body (the mappings decode without copying).
		t.newOne.Add(ctx, int64(len(drifted)), metric.WithAttributes(attribute.String("provider", provider), attribute.String("event_type", strings.Clone(eventType))))
	}
	return drifted, nil
}

// baselineField holds, in a type's hash, the id of the first event of the
// type: the paths it carried are the baseline. "\x00" starts no path.
const baselineField = "\x00baseline"

// Seen is one recorded path.
type Seen struct {
	Provider     string
	EventType    string
	Path         string
	FirstEventID string
	FirstSeen    time.Time
	// Baseline: the path came with the first event of its type (the shape
	// the type had when it was first seen), so it is not drift.
	Baseline bool
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
		baseline, hasBaseline := m[baselineField]
		for p, v := range m {
			if p == baselineField {
				continue
			}
			id, ts, _ := strings.Cut(v, " ")
			sec, _ := strconv.ParseInt(ts, 10, 64)
			out = append(out, Seen{Provider: prov, EventType: typ, Path: p, FirstEventID: id, FirstSeen: time.Unix(sec, 0).UTC(),
				Baseline: hasBaseline && id == baseline})
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
