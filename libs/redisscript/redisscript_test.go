package redisscript

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/localinfra"
)

var incr = redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
var echo = redis.NewScript(`return ARGV[1] .. KEYS[1]`)

// calls is how many times Redis ran cmd ("evalsha", "eval") since start.
func calls(t *testing.T, rdb *redis.Client, cmd string) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

func TestCallsGoBySHAAndOnlyThoseRedisDidNotKnowAreSentAgain(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	defer rdb.Close()
	ctx := context.Background()

	// Redis knows incr but not echo (it lost its scripts, then one was used).
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := incr.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	batch := []Call{
		{Script: incr, Keys: []string{"a"}, Args: []any{1}},
		{Script: echo, Keys: []string{"x"}, Args: []any{"hello "}},
		{Script: incr, Keys: []string{"b"}, Args: []any{5}},
	}
	cmds, err := Run(ctx, rdb, batch)
	if err != nil {
		t.Fatal(err)
	}
	if a, b, s := cmds[0].Val(), cmds[2].Val(), cmds[1].Val(); a != int64(1) || b != int64(5) || s != "hello x" {
		t.Fatalf("answers %v, %v, %q; want 1, 5, %q", a, b, s, "hello x")
	}
	// The calls of incr ran once: only echo's call went again, with its body.
	if got := calls(t, rdb, "eval"); got != 1 {
		t.Fatalf("%d calls sent with their body, want 1 (echo's, refused by SHA)", got)
	}
	if a, _ := rdb.Get(ctx, "a").Int(); a != 1 {
		t.Fatalf("a = %d after one call, want 1", a)
	}

	// Every script is known now: everything goes by SHA.
	sha := calls(t, rdb, "evalsha")
	if _, err := Run(ctx, rdb, batch); err != nil {
		t.Fatal(err)
	}
	if got := calls(t, rdb, "eval"); got != 1 {
		t.Fatalf("%d calls with their body after the scripts were loaded, want still 1", got)
	}
	if got := calls(t, rdb, "evalsha") - sha; got != 3 {
		t.Fatalf("%d calls by SHA, want 3", got)
	}
	if b, _ := rdb.Get(ctx, "b").Int(); b != 10 {
		t.Fatalf("b = %d after two calls of 5, want 10", b)
	}
}

func TestAScriptsErrorIsTheRunsError(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "s", "text", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cmds, err := Run(ctx, rdb, []Call{
		{Script: incr, Keys: []string{"n"}, Args: []any{2}},
		{Script: incr, Keys: []string{"s"}, Args: []any{1}}, // not an integer
	})
	if err == nil || cmds[1].Err() == nil {
		t.Fatalf("INCRBY of a string: err %v, want the script's error", err)
	}
	if n, _ := cmds[0].Int64(); n != 2 {
		t.Fatalf("the other call answered %d, want 2", n)
	}
	if cmds, err := Run(ctx, rdb, nil); err != nil || len(cmds) != 0 {
		t.Fatalf("no calls: %v, %v", cmds, err)
	}
}
