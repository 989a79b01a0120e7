// Package drift notices schema drift: per provider and event type it keeps
// the set of field paths seen in webhook bodies, and records a path never
// seen before — counted in closedloop_normalizer_schema_drift_total and
// stored in Redis with the id and time of the first event that carried it,
// for the admin API to list. Array indices are folded ("answers[].id") so a
// longer list is not drift.
package drift

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strconv"
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
	mu     sync.Mutex
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

// Paths lists the folded field paths of a JSON body, sorted.
func Paths(body []byte) []string {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return nil
	}
	set := map[string]bool{}
	walk("", v, set)
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func walk(prefix string, v any, set map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			set[p] = true
			walk(p, c, set)
		}
	case []any:
		for _, c := range x {
			walk(prefix+"[]", c, set)
		}
	}
}

// Observe records the paths of one event's body. New paths (new to this
// process) are written to Redis with HSETNX, so the first event id that
// carried a path anywhere is kept; it returns the paths Redis had not seen.
// A Redis failure is returned but loses nothing: the paths are retried with
// the next event that carries them.
func (t *Tracker) Observe(ctx context.Context, provider, eventType, eventID string, body []byte) ([]string, error) {
	key := provider + "/" + eventType
	var fresh []string
	t.mu.Lock()
	known := t.seen[key]
	if known == nil {
		known = map[string]bool{}
		t.seen[key] = known
	}
	for _, p := range Paths(body) {
		if !known[p] {
			fresh = append(fresh, p)
		}
	}
	t.mu.Unlock()
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
	for i, p := range fresh {
		known[p] = true
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
	Path         string
	FirstEventID string
	FirstSeen    time.Time
}

// List returns the recorded paths of a provider's event type, sorted.
func (t *Tracker) List(ctx context.Context, provider, eventType string) ([]Seen, error) {
	m, err := t.rdb.HGetAll(ctx, t.prefix+provider+"/"+eventType).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Seen, 0, len(m))
	for p, v := range m {
		id, ts, _ := bytes.Cut([]byte(v), []byte(" "))
		sec, _ := strconv.ParseInt(string(ts), 10, 64)
		out = append(out, Seen{Path: p, FirstEventID: string(id), FirstSeen: time.Unix(sec, 0).UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
