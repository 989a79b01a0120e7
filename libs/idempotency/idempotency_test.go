package idempotency

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/localinfra"
)

func newStore(t *testing.T, owner string, processing time.Duration) (*Store, *redis.Client) {
	t.Helper()
	addr := localinfra.RedisForTest(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return New(rdb, Options{Owner: owner, ProcessingTTL: processing, Prefix: "test:" + t.Name() + ":"}), rdb
}

func TestAnEventIsClaimedOnceAndIsADuplicateAfterComplete(t *testing.T) {
	s, _ := newStore(t, "w1", time.Second)
	ctx := context.Background()
	if o, err := s.Claim(ctx, "src", "evt:1", "subj:r:1:v1"); err != nil || o != Claimed {
		t.Fatalf("first claim = %v, %v", o, err)
	}
	if err := s.Complete(ctx, "src", time.Hour, "evt:1", "subj:r:1:v1"); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.Claim(ctx, "src", "evt:1", "subj:r:1:v1"); o != Duplicate {
		t.Fatalf("claim after complete = %v, want duplicate", o)
	}
}

func TestAnyOneDoneKeyMakesTheEventADuplicate(t *testing.T) {
	s, _ := newStore(t, "w1", time.Second)
	ctx := context.Background()
	_, _ = s.Claim(ctx, "src", "subj:r:1:v1")
	_ = s.Complete(ctx, "src", time.Hour, "subj:r:1:v1")
	// A backfilled copy has another event id but the same subject version.
	if o, _ := s.Claim(ctx, "src", "evt:backfill-9", "subj:r:1:v1"); o != Duplicate {
		t.Fatalf("claim = %v, want duplicate through the subject key", o)
	}
}

func TestScopesKeepTheSameIDApart(t *testing.T) {
	s, _ := newStore(t, "w1", time.Second)
	ctx := context.Background()
	_, _ = s.Claim(ctx, "src", "evt:1")
	_ = s.Complete(ctx, "src", time.Hour, "evt:1")
	if o, _ := s.Claim(ctx, "src/replay-7", "evt:1"); o != Claimed {
		t.Fatalf("claim in a replay scope = %v, want claimed", o)
	}
}

func TestAClaimHeldByAnotherWorkerIsInProgressUntilItExpires(t *testing.T) {
	a, rdb := newStore(t, "dead-worker", 300*time.Millisecond)
	b := New(rdb, Options{Owner: "new-worker", ProcessingTTL: time.Second, Prefix: "test:" + t.Name() + ":"})
	ctx := context.Background()
	if o, _ := a.Claim(ctx, "src", "evt:1"); o != Claimed {
		t.Fatal("first claim failed")
	}
	if o, _ := b.Claim(ctx, "src", "evt:1"); o != InProgress {
		t.Fatalf("claim while held = %v, want in progress", o)
	}
	time.Sleep(400 * time.Millisecond)
	if o, _ := b.Claim(ctx, "src", "evt:1"); o != Claimed {
		t.Fatalf("claim after the holder's claim expired = %v, want claimed (no loss)", o)
	}
}

func TestReleaseLetsTheEventBeClaimedAgainButOnlyByItsOwner(t *testing.T) {
	a, rdb := newStore(t, "a", time.Minute)
	b := New(rdb, Options{Owner: "b", ProcessingTTL: time.Minute, Prefix: "test:" + t.Name() + ":"})
	ctx := context.Background()
	_, _ = a.Claim(ctx, "src", "evt:1")
	_ = b.Release(ctx, "src", "evt:1")
	if o, _ := b.Claim(ctx, "src", "evt:1"); o != InProgress {
		t.Fatalf("another worker's release removed a's claim: %v", o)
	}
	_ = a.Release(ctx, "src", "evt:1")
	if o, _ := b.Claim(ctx, "src", "evt:1"); o != Claimed {
		t.Fatalf("claim after release = %v", o)
	}
}

func TestConcurrentClaimsOfOneEventHaveExactlyOneWinner(t *testing.T) {
	_, rdb := newStore(t, "x", time.Minute)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := New(rdb, Options{Owner: "w" + string(rune('a'+i)), Prefix: "test:" + t.Name() + ":"})
			if o, err := s.Claim(context.Background(), "src", "evt:1", "subj:1"); err == nil && o == Claimed {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d workers claimed the event, want exactly 1", wins.Load())
	}
}

func TestBatchCallsMatchTheSingleOnesAndSurviveAScriptFlush(t *testing.T) {
	s, rdb := newStore(t, "w1", time.Second)
	ctx := context.Background()
	// Redis lost its scripts (restart): the pipeline reloads them.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	items := []Item{
		{Scope: "src", IDs: []string{"evt:1", "subj:1"}, TTL: time.Hour},
		{Scope: "src", IDs: []string{"evt:2"}, TTL: time.Hour},
	}
	out, err := s.ClaimAll(ctx, items)
	if err != nil || out[0] != Claimed || out[1] != Claimed {
		t.Fatalf("ClaimAll = %v, %v", out, err)
	}
	if err := s.CompleteAll(ctx, items[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseAll(ctx, items[1:]); err != nil {
		t.Fatal(err)
	}
	other := s.ForWorker("partition-7")
	out, err = other.ClaimAll(ctx, []Item{{Scope: "src", IDs: []string{"evt:9", "subj:1"}}, {Scope: "src", IDs: []string{"evt:2"}}})
	if err != nil || out[0] != Duplicate || out[1] != Claimed {
		t.Fatalf("after complete and release: %v, %v (want duplicate through subj:1, claimed after release)", out, err)
	}
	// The claim of partition-7's worker is in progress for every other worker, also of this process.
	if o, _ := s.ForWorker("partition-8").Claim(ctx, "src", "evt:2"); o != InProgress {
		t.Fatalf("claim by a sibling worker = %v, want in progress", o)
	}
	if o, _ := other.Claim(ctx, "src", "evt:2"); o != Claimed {
		t.Fatalf("re-claim by its own worker = %v, want claimed", o)
	}
}

// A batch of many scopes is one script call per scope; each event's outcome
// is its own, in the order of the items, as if claimed one by one.
func TestABatchOfManyScopesAnswersEachEventInOrder(t *testing.T) {
	s, rdb := newStore(t, "w1", time.Minute)
	other := New(rdb, Options{Owner: "w2", ProcessingTTL: time.Minute, Prefix: "test:" + t.Name() + ":"})
	ctx := context.Background()
	if err := s.Complete(ctx, "a", time.Hour, "evt:done"); err != nil {
		t.Fatal(err)
	}
	if o, _ := other.Claim(ctx, "b", "evt:held"); o != Claimed {
		t.Fatal("w2's claim failed")
	}
	items := []Item{
		{Scope: "a", IDs: []string{"evt:1", "subj:1"}},
		{Scope: "b", IDs: []string{"evt:held", "subj:2"}},   // w2 holds one key
		{Scope: "a", IDs: []string{"evt:2", "evt:done"}},    // one key done
		{Scope: "b", IDs: []string{"evt:3"}},                // another scope, free
		{Scope: "a", IDs: []string{"evt:4", "subj:1"}},      // shares subj:1 with the first: same owner
		{Scope: "{c}", IDs: []string{"evt:done"}},           // a scope with braces is its own
		{Scope: "b", IDs: []string{"evt:done", "evt:held"}}, // held, not done, in b
	}
	out, err := s.ClaimAll(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	want := []Outcome{Claimed, InProgress, Duplicate, Claimed, Claimed, Claimed, InProgress}
	for i := range want {
		if out[i] != want[i] {
			t.Fatalf("outcomes %v, want %v", out, want)
		}
	}
	// The in-progress and duplicate events claimed nothing.
	if n, _ := rdb.Exists(ctx, s.Keys("b", "subj:2")...).Result(); n != 0 {
		t.Fatal("an in-progress event's free key was claimed")
	}
	if err := s.CompleteAll(ctx, []Item{{Scope: "a", IDs: []string{"evt:1"}, TTL: time.Hour}, {Scope: "b", IDs: []string{"evt:3"}, TTL: 2 * time.Hour}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		scope, id string
		ttl       time.Duration
	}{{"a", "evt:1", time.Hour}, {"b", "evt:3", 2 * time.Hour}} {
		k := s.Keys(c.scope, c.id)[0]
		v, _ := rdb.Get(ctx, k).Result()
		ttl, _ := rdb.PTTL(ctx, k).Result()
		if v != "done" || ttl <= c.ttl-time.Minute || ttl > c.ttl {
			t.Fatalf("%s: %q with TTL %v, want done for %v", k, v, ttl, c.ttl)
		}
	}
	if err := s.ReleaseAll(ctx, []Item{{Scope: "a", IDs: []string{"evt:4", "subj:1"}}, {Scope: "b", IDs: []string{"evt:held"}}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, s.Keys("a", "evt:4", "subj:1")...).Result(); n != 0 {
		t.Fatal("release left w1's claims")
	}
	if o, _ := s.Claim(ctx, "b", "evt:held"); o != InProgress {
		t.Fatal("w1's release dropped w2's claim")
	}
}

// A claim that fails leaves none of the keys it set on the way: the event's
// free keys stay free, for the event's next copy and for everybody else.
func TestAFailedClaimLeavesNoKeyBehind(t *testing.T) {
	a, rdb := newStore(t, "a", time.Minute)
	b := New(rdb, Options{Owner: "b", ProcessingTTL: time.Minute, Prefix: "test:" + t.Name() + ":"})
	ctx := context.Background()
	_, _ = a.Claim(ctx, "src", "subj:done")
	_ = a.Complete(ctx, "src", time.Hour, "subj:done")
	_, _ = a.Claim(ctx, "src", "subj:held")
	out, err := b.ClaimAll(ctx, []Item{
		{Scope: "src", IDs: []string{"evt:1", "evt:2", "subj:done", "evt:3"}},
		{Scope: "src", IDs: []string{"evt:4", "subj:held", "evt:5"}},
		{Scope: "src", IDs: []string{"evt:6", "subj:held", "subj:done"}},
	})
	if err != nil || out[0] != Duplicate || out[1] != InProgress || out[2] != Duplicate {
		t.Fatalf("outcomes %v, %v; want duplicate, in progress, duplicate", out, err)
	}
	for _, id := range []string{"evt:1", "evt:2", "evt:3", "evt:4", "evt:5", "evt:6"} {
		if n := rdb.Exists(ctx, b.Keys("src", id)...).Val(); n != 0 {
			t.Fatalf("%s was left claimed by a claim that failed", id)
		}
	}
	if v := rdb.Get(ctx, b.Keys("src", "subj:held")[0]).Val(); v != a.marker() {
		t.Fatalf("the other worker's claim became %q", v)
	}
}

// A worker's retry renews its own claim for the whole processing TTL.
func TestARetryRenewsTheWorkersOwnClaim(t *testing.T) {
	s, rdb := newStore(t, "w1", time.Minute)
	ctx := context.Background()
	if o, _ := s.Claim(ctx, "src", "evt:1"); o != Claimed {
		t.Fatal("first claim failed")
	}
	key := s.Keys("src", "evt:1")[0]
	rdb.PExpire(ctx, key, time.Second) // most of the claim's time has gone
	if o, _ := s.Claim(ctx, "src", "evt:1", "subj:1"); o != Claimed {
		t.Fatal("the retry's claim failed")
	}
	for _, k := range s.Keys("src", "evt:1", "subj:1") {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl < 50*time.Second {
			t.Fatalf("%s has %v left after the retry, want about a minute", k, ttl)
		}
	}
}
