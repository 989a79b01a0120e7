package crm

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/localinfra"
)

// Versions decide; a live holder's lease keeps others out; a dead
// holder's lease is taken over once its session expires; a refused write
// gives the contact its previous version back.
func TestTheGuardOrdersWritesAndOutlivesNoDeadWriter(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	ctx := context.Background()
	prefix := "t:" + t.Name() + ":{crm}:contact:"
	a := &Guard{RDB: rdb, Prefix: prefix, SessionTTL: 500 * time.Millisecond}
	b := &Guard{RDB: rdb, Prefix: prefix, SessionTTL: 500 * time.Millisecond}
	actx, stopA := context.WithCancel(ctx)
	a.Run(actx)
	old, mid, last := Version{At: 100, EventID: "e1"}, Version{At: 200, EventID: "e2"}, Version{At: 300, EventID: "e3"}

	// Redis lost its scripts (a restart, a failover): the claims and
	// releases below load them again.
	flush := func() {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	claims, held, err := a.ClaimAll(ctx, []string{"x@example.com"}, []Version{mid})
	if err != nil || claims[0] != Write {
		t.Fatalf("first claim: %v %v", claims, err)
	}
	if c, _, _ := b.ClaimAll(ctx, []string{"x@example.com"}, []Version{last}); c[0] != Busy {
		t.Fatalf("while a live writer holds the contact: %v, want busy", c)
	}
	if err := a.Release(ctx, held, nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := b.ClaimAll(ctx, []string{"x@example.com"}, []Version{old}); c[0] != Superseded {
		t.Fatalf("an older event: %v, want superseded", c)
	}
	c, h, _ := b.ClaimAll(ctx, []string{"x@example.com"}, []Version{last})
	if c[0] != Write {
		t.Fatalf("a newer event: %v, want write", c)
	}
	flush()
	if err := b.Release(ctx, h, []bool{true}, nil, 0); err != nil { // refused: back to mid
		t.Fatal(err)
	}
	if v, _ := b.Stored(ctx, "x@example.com"); v != mid {
		t.Fatalf("after a refused write the contact holds %v, want %v", v, mid)
	}
	// A write whose outcome is unknown holds the contact for the settle time.
	c, h, _ = a.ClaimAll(ctx, []string{"z@example.com"}, []Version{mid})
	if err := a.Release(ctx, h, nil, []bool{true}, 300*time.Millisecond); err != nil || c[0] != Write {
		t.Fatal(c, err)
	}
	if c, _, _ := b.ClaimAll(ctx, []string{"z@example.com"}, []Version{last}); c[0] != Busy {
		t.Fatalf("right after an unsure write: %v, want busy", c)
	}
	time.Sleep(350 * time.Millisecond)
	if c, _, _ := b.ClaimAll(ctx, []string{"z@example.com"}, []Version{last}); c[0] != Write {
		t.Fatalf("after the settle time: %v, want write", c)
	}
	// a claims and dies (its session is no longer renewed).
	if c, _, _ := a.ClaimAll(ctx, []string{"y@example.com"}, []Version{mid}); c[0] != Write {
		t.Fatal(c)
	}
	stopA()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, _, _ := b.ClaimAll(ctx, []string{"y@example.com"}, []Version{last})
		if c[0] == Write {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a dead writer's contact is still %v after 3 s", c)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
