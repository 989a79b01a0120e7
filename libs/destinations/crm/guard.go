package crm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/redisscript"
)

// Guard keeps a contact's fields at its newest feedback. Events reach a
// CRM destination out of order — replays, backfills, retries, and a
// person's responses on different partitions — so before a write the
// destination claims the contact: the claim takes the contact's lease (one
// writer at a time, whichever replica) and records the event's version,
// unless the contact holds a newer one, in one Redis script. The version
// is recorded before the write, so an older event that comes while the
// write is on its way, or after a crash that lost the write's answer, is
// superseded; the event itself, redelivered, claims again (an equal
// version) and rewrites. A write the CRM refuses for good gives the
// contact its previous version back.
//
// A lease names the claim that holds it and the session of its process;
// the session is
// a key the process renews every second (Run) and that expires SessionTTL
// after the process died, and a lease of a session that is gone is taken
// over: a killed replica holds its contacts for seconds, not for the
// lease's lifetime. Every key of a destination has one hash tag, so the
// script's keys share a Redis Cluster slot.
type Guard struct {
	RDB redis.UniversalClient
	// Prefix of the keys (with the destination's hash tag):
	// <Prefix>v:<email> (the version), <Prefix>lease:<email>,
	// <Prefix>session:<id>.
	Prefix string
	// TTL of a version (default 400 days): an event older than the last
	// write by more than this is written.
	TTL time.Duration
	// Lease bounds one write of a live but stuck process (default 5m).
	Lease time.Duration
	// SessionTTL is how long a dead process's session outlives it
	// (default 5s).
	SessionTTL time.Duration

	once    sync.Once
	session string
}

// Claim is the outcome of claiming a contact.
type Claim int

// Claims.
const (
	// Write: the event is the newest; write it, then Release.
	Write Claim = iota + 1
	// Superseded: the contact holds a newer event's fields; nothing to do.
	Superseded
	// Busy: another live writer holds the contact; try again shortly.
	Busy
)

// claim: KEYS[1] version, KEYS[2] lease; ARGV at, event id, owner
// (<session>|<claim>), lease ms, ttl ms, session key prefix. Returns {1|0|-1, previous version}.
var claimScript = redis.NewScript(`
local l = redis.call('GET', KEYS[2])
if l and l ~= ARGV[3] then
  local sep = string.find(l, '|', 1, true)
  if not sep or redis.call('EXISTS', ARGV[6] .. string.sub(l, 1, sep - 1)) == 1 then return {-1, ''} end
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  local at = tonumber(string.sub(cur, 1, sep - 1))
  local id = string.sub(cur, sep + 1)
  local nat = tonumber(ARGV[1])
  if at > nat or (at == nat and id > ARGV[2]) then return {0, cur} end
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[5])
return {1, cur or ''}`)

// release: KEYS[1] version, KEYS[2] lease; ARGV owner, restore (1/0),
// previous, mine, ttl ms, settle ms (0: free the lease now).
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) == ARGV[1] then
  if ARGV[6] == '0' then redis.call('DEL', KEYS[2]) else redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
end
if ARGV[2] == '1' and redis.call('GET', KEYS[1]) == ARGV[4] then
  if ARGV[3] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[5]) end
end
return 1`)

func (g *Guard) sessionTTL() time.Duration {
	if g.SessionTTL > 0 {
		return g.SessionTTL
	}
	return 5 * time.Second
}

// Run keeps the process's session alive until ctx ends (the first claim
// starts it when Run was not called).
func (g *Guard) Run(ctx context.Context) {
	g.once.Do(func() {
		var b [12]byte
		_, _ = rand.Read(b[:])
		g.session = hex.EncodeToString(b[:])
		_ = g.RDB.Set(ctx, g.Prefix+"session:"+g.session, 1, g.sessionTTL()).Err()
		go func() {
			t := time.NewTicker(g.sessionTTL() / 5)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					_ = g.RDB.Del(context.WithoutCancel(ctx), g.Prefix+"session:"+g.session).Err()
					return
				case <-t.C:
					_ = g.RDB.Set(ctx, g.Prefix+"session:"+g.session, 1, g.sessionTTL()).Err()
				}
			}
		}()
	})
}

// Held is a contact claimed for a write.
type Held struct {
	email, token, prev string
	mine               Version
}

func (g *Guard) ttl() time.Duration {
	if g.TTL > 0 {
		return g.TTL
	}
	return 400 * 24 * time.Hour
}

func (g *Guard) lease() time.Duration {
	if g.Lease > 0 {
		return g.Lease
	}
	return 5 * time.Minute
}

// ClaimAll claims each email for its version in one round trip; the Held
// of a Write claim is to be released after the write.
func (g *Guard) ClaimAll(ctx context.Context, emails []string, versions []Version) ([]Claim, []*Held, error) {
	g.Run(context.Background())
	// The lease's owner is this claim (two batches of one process exclude
	// each other too), of this process's session (its liveness).
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := g.session + "|" + hex.EncodeToString(b[:])
	calls := make([]redisscript.Call, len(emails))
	for i, e := range emails {
		calls[i] = redisscript.Call{Script: claimScript, Keys: []string{g.Prefix + "v:" + e, g.Prefix + "lease:" + e},
			Args: []any{versions[i].At, versions[i].EventID, token, g.lease().Milliseconds(), g.ttl().Milliseconds(), g.Prefix + "session:"}}
	}
	cmds, err := redisscript.Run(ctx, g.RDB, calls)
	if err != nil {
		return nil, nil, fmt.Errorf("claiming contacts in Redis: %w", err)
	}
	claims := make([]Claim, len(emails))
	held := make([]*Held, len(emails))
	for i, c := range cmds {
		res, err := c.Slice()
		if err != nil || len(res) != 2 {
			return nil, nil, fmt.Errorf("claiming contacts in Redis: %v", err)
		}
		code, _ := res[0].(int64)
		switch code {
		case 1:
			claims[i] = Write
			prev, _ := res[1].(string)
			held[i] = &Held{email: emails[i], token: token, prev: prev, mine: versions[i]}
		case 0:
			claims[i] = Superseded
		default:
			claims[i] = Busy
		}
	}
	return claims, held, nil
}

// Release frees the contacts; those whose write the CRM refused for good
// (failed) get their previous version back. A write whose outcome is
// unknown (unsure: a timeout, a dropped connection, a 5xx) may still land
// at the CRM after its answer was given up on: its contact stays held for
// settle, so no newer write can be overtaken by it.
func (g *Guard) Release(ctx context.Context, held []*Held, failed, unsure []bool, settle time.Duration) error {
	ctx = context.WithoutCancel(ctx)
	var calls []redisscript.Call
	for i, h := range held {
		if h == nil {
			continue
		}
		restore, hold := "0", int64(0)
		if failed != nil && failed[i] {
			restore = "1"
		}
		if unsure != nil && unsure[i] && settle > 0 {
			hold = settle.Milliseconds()
		}
		calls = append(calls, redisscript.Call{Script: releaseScript, Keys: []string{g.Prefix + "v:" + h.email, g.Prefix + "lease:" + h.email},
			Args: []any{h.token, restore, h.prev, h.mine.String(), g.ttl().Milliseconds(), hold}})
	}
	_, err := redisscript.Run(ctx, g.RDB, calls)
	return err
}

// Stored is the version a contact holds (zero when none).
func (g *Guard) Stored(ctx context.Context, email string) (Version, error) {
	v, err := g.RDB.Get(ctx, g.Prefix+"v:"+email).Result()
	if err == redis.Nil {
		return Version{}, nil
	}
	if err != nil {
		return Version{}, err
	}
	at, id, _ := cut(v)
	n, _ := strconv.ParseInt(at, 10, 64)
	return Version{At: n, EventID: id}, nil
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '|' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
