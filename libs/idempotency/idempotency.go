// Package idempotency is the two-phase Redis idempotency store of
// ARCHITECTURE.md ("Delivery semantics"):
//
//  1. Claim before the work: every key of the event is checked and, when none
//     is "done" and none is being processed by another worker, all of them are
//     set to "processing:<owner>" with a short TTL — atomically, in one Lua
//     script, so two workers can never both claim an event.
//  2. Complete after the work is durable: the keys become "done" with the
//     long, per-source TTL (it must outlast the provider's retry window).
//
// A worker that dies between the two leaves keys in "processing" that expire
// after ProcessingTTL; the redelivered event is then claimed and processed
// again: no loss, at the price of a possible repeat downstream, which the next
// stage's idempotency absorbs.
//
// Keys are "<prefix>{<scope>}:<id>". The scope (the source name, plus the
// replay id for an operator's replay) is a Redis Cluster hash tag, so all the
// keys of one claim live in one slot.
package idempotency

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/redisscript"
)

// Outcome is the result of a claim.
type Outcome int

const (
	// Claimed: the caller owns the event and must do the work, then Complete
	// (or Release on failure).
	Claimed Outcome = iota
	// Duplicate: one of the keys is done: the event was processed before.
	Duplicate
	// InProgress: another worker holds the claim. Retry later; the claim
	// expires after ProcessingTTL if that worker died.
	InProgress
)

func (o Outcome) String() string {
	switch o {
	case Claimed:
		return "claimed"
	case Duplicate:
		return "duplicate"
	case InProgress:
		return "in_progress"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// ErrInProgress is returned by helpers that treat InProgress as a retryable failure.
var ErrInProgress = errors.New("event is being processed by another worker")

// Store is the idempotency store. It is safe for concurrent use.
type Store struct {
	rdb           redis.UniversalClient
	prefix        string
	owner         string
	processingTTL time.Duration
}

// Options configure a Store.
type Options struct {
	// Prefix is put before every key (default "closedloop:idem:").
	Prefix string
	// Owner identifies this worker in "processing" markers; make it unique per
	// process start (host name + pid + start time) so that a restarted worker
	// does not mistake a dead predecessor's claim for its own.
	Owner string
	// ProcessingTTL is how long a claim lives without Complete (default 30s).
	// It must exceed the longest time the work under a claim takes.
	ProcessingTTL time.Duration
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient, o Options) *Store {
	if o.Prefix == "" {
		o.Prefix = "closedloop:idem:"
	}
	if o.Owner == "" {
		o.Owner = "anonymous-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if o.ProcessingTTL <= 0 {
		o.ProcessingTTL = 30 * time.Second
	}
	return &Store{rdb: rdb, prefix: o.Prefix, owner: o.Owner, processingTTL: o.ProcessingTTL}
}

const doneValue = "done"

// The scripts take the keys of many events of one scope (one Redis Cluster
// hash slot) in one call, KEYS in the order of the events, and answer one
// number per event: a batch is one script call per scope instead of one per
// event. Each event is handled exactly as it would be alone, in order, so
// two events of one call that share a key are both claimed (same owner).

// claimScript: ARGV[1] the marker, ARGV[2] the claim's TTL in ms, then each
// event's number of keys. 1: one key is done (duplicate); 2: one key is
// claimed by another owner (in progress); 0: every key is now claimed.
var claimScript = redis.NewScript(`
local out, k = {}, 1
for i = 3, #ARGV do
  local last = k + tonumber(ARGV[i]) - 1
  local res = 0
  for j = k, last do
    local v = redis.call('GET', KEYS[j])
    if v == 'done' then res = 1 break end
    if v and v ~= ARGV[1] then res = 2 end
  end
  if res == 0 then
    for j = k, last do redis.call('SET', KEYS[j], ARGV[1], 'PX', ARGV[2]) end
  end
  out[#out + 1] = res
  k = last + 1
end
return out
`)

// completeScript: per event its number of keys and its TTL in ms.
var completeScript = redis.NewScript(`
local out, k = {}, 1
for i = 1, #ARGV, 2 do
  local last = k + tonumber(ARGV[i]) - 1
  for j = k, last do redis.call('SET', KEYS[j], 'done', 'PX', ARGV[i + 1]) end
  out[#out + 1] = 0
  k = last + 1
end
return out
`)

// releaseScript: ARGV[1] the marker, then each event's number of keys.
var releaseScript = redis.NewScript(`
local out, k = {}, 1
for i = 2, #ARGV do
  local last = k + tonumber(ARGV[i]) - 1
  for j = k, last do
    if redis.call('GET', KEYS[j]) == ARGV[1] then redis.call('DEL', KEYS[j]) end
  end
  out[#out + 1] = 0
  k = last + 1
end
return out
`)

// scopeTag keeps a scope from closing its own hash tag.
var scopeTag = strings.NewReplacer("{", "(", "}", ")")

// Keys builds the full keys for ids within a scope.
func (s *Store) Keys(scope string, ids ...string) []string {
	return s.appendKeys(make([]string, 0, len(ids)), scope, ids...)
}

func (s *Store) appendKeys(keys []string, scope string, ids ...string) []string {
	scope = scopeTag.Replace(scope)
	for _, id := range ids {
		keys = append(keys, s.prefix+"{"+scope+"}:"+id)
	}
	return keys
}

func (s *Store) marker() string { return "processing:" + s.owner }

// Claim tries to claim the event named by ids (its event id, its subject
// version, ...) within scope: ClaimAll for one event.
func (s *Store) Claim(ctx context.Context, scope string, ids ...string) (Outcome, error) {
	out, err := s.ClaimAll(ctx, []Item{{Scope: scope, IDs: ids}})
	if err != nil {
		return 0, err
	}
	return out[0], nil
}

// Complete marks the claimed event done for ttl.
func (s *Store) Complete(ctx context.Context, scope string, ttl time.Duration, ids ...string) error {
	return s.CompleteAll(ctx, []Item{{Scope: scope, IDs: ids, TTL: ttl}})
}

// Release drops this worker's claim (when the work failed and will be
// retried), so the retry need not wait for ProcessingTTL. Claims held by
// others are left alone.
func (s *Store) Release(ctx context.Context, scope string, ids ...string) error {
	return s.ReleaseAll(ctx, []Item{{Scope: scope, IDs: ids}})
}

// Ping is the "redis" readiness check.
func Ping(rdb redis.UniversalClient) func(ctx context.Context) error {
	return func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
}

// Item names one event in the batch calls: its scope, its ids and (for
// CompleteAll) the TTL of its "done" marks.
type Item struct {
	Scope string
	IDs   []string
	TTL   time.Duration
}

// ForWorker returns a Store whose claims belong to one worker of this
// process (for example one partition's): a retry by that worker re-claims
// its own keys, while another worker — in this process or any other — sees
// them in progress. Without it two partitions of one process could both
// claim the same subject version.
func (s *Store) ForWorker(worker string) *Store {
	c := *s
	c.owner = s.owner + "/" + worker
	return &c
}

// ClaimAll claims many events in one round trip (one atomic script per
// event, pipelined). Outcomes are in the order of items. Two items of one
// batch that share a key are both Claimed (same owner): the caller must
// dedupe within its batch.
func (s *Store) ClaimAll(ctx context.Context, items []Item) ([]Outcome, error) {
	for _, it := range items {
		if len(it.IDs) == 0 {
			return nil, errors.New("idempotency: claim with no ids")
		}
	}
	ns, err := s.runAll(ctx, claimScript, items, []any{s.marker(), s.processingTTL.Milliseconds()}, func(it Item) []any {
		return []any{len(it.IDs)}
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency claim: %w", err)
	}
	out := make([]Outcome, len(items))
	for i, n := range ns {
		switch n {
		case 0:
			out[i] = Claimed
		case 1:
			out[i] = Duplicate
		default:
			out[i] = InProgress
		}
	}
	return out, nil
}

// CompleteAll marks many claimed events done, each for its TTL.
func (s *Store) CompleteAll(ctx context.Context, items []Item) error {
	if _, err := s.runAll(ctx, completeScript, items, nil, func(it Item) []any {
		return []any{len(it.IDs), it.TTL.Milliseconds()}
	}); err != nil {
		return fmt.Errorf("idempotency complete: %w", err)
	}
	return nil
}

// ReleaseAll drops this worker's claims of many events.
func (s *Store) ReleaseAll(ctx context.Context, items []Item) error {
	if _, err := s.runAll(ctx, releaseScript, items, []any{s.marker()}, func(it Item) []any {
		return []any{len(it.IDs)}
	}); err != nil {
		return fmt.Errorf("idempotency release: %w", err)
	}
	return nil
}

// runAll runs script once per scope of items, in one pipeline, and returns
// its answer for each item in the order of items. A call's arguments are
// head, then per(item) for each of its items.
func (s *Store) runAll(ctx context.Context, script *redis.Script, items []Item, head []any, per func(Item) []any) ([]int64, error) {
	if len(items) == 0 {
		return nil, nil
	}
	groups := byScope(items)
	calls := make([]redisscript.Call, len(groups))
	for g, idx := range groups {
		var keys []string
		args := slices.Clone(head)
		for _, i := range idx {
			keys = s.appendKeys(keys, items[i].Scope, items[i].IDs...)
			args = append(args, per(items[i])...)
		}
		calls[g] = redisscript.Call{Script: script, Keys: keys, Args: args}
	}
	cmds, err := redisscript.Run(ctx, s.rdb, calls)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(items))
	for g, c := range cmds {
		ns, err := c.Int64Slice()
		if err != nil {
			return nil, err
		}
		if len(ns) != len(groups[g]) {
			return nil, fmt.Errorf("script answered %d results for %d events", len(ns), len(groups[g]))
		}
		for j, i := range groups[g] {
			out[i] = ns[j]
		}
	}
	return out, nil
}

// byScope groups the indexes of items by scope, in order of first
// appearance and, within a scope, in the order of items.
func byScope(items []Item) [][]int {
	at := map[string]int{}
	var groups [][]int
	for i, it := range items {
		g, ok := at[it.Scope]
		if !ok {
			g = len(groups)
			at[it.Scope] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// Seen reports, for each item's ids, whether any of them is claimed or
// done within scope: whether the pipeline has received that event (in any
// copy). One pipelined round trip for all items. Reconciliation asks it
// before producing an item the provider's API listed.
func (s *Store) Seen(ctx context.Context, scope string, items [][]string) ([]bool, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(items))
	for i, ids := range items {
		cmds[i] = pipe.Exists(ctx, s.Keys(scope, ids...)...)
	}
	if _, err := pipe.Exec(ctx); err != nil && len(items) > 0 {
		return nil, err
	}
	out := make([]bool, len(items))
	for i, c := range cmds {
		out[i] = c.Val() > 0
	}
	return out, nil
}
