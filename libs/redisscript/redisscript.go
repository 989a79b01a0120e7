// Package redisscript runs many calls of Lua scripts in one Redis round
// trip, each by its SHA (EVALSHA): a script's body crosses the network and
// is hashed by Redis once per script cache, not on every call.
package redisscript

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Call is one call of a script.
type Call struct {
	Script *redis.Script
	Keys   []string
	Args   []any
}

// Run sends calls in one pipeline by SHA and returns their commands in the
// order of calls; the error is the first call's error, as a pipeline's.
// A Redis whose script cache is empty (a restart, a failover, SCRIPT FLUSH)
// answers NOSCRIPT without running the call: those calls, and only those,
// are sent once more with their body (EVAL), which loads the script for
// the calls after them. A call therefore runs at most once.
func Run(ctx context.Context, rdb redis.UniversalClient, calls []Call) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	if len(calls) == 0 {
		return cmds, nil
	}
	pipe := rdb.Pipeline()
	for i, c := range calls {
		cmds[i] = c.Script.EvalSha(ctx, pipe, c.Keys, c.Args...)
	}
	_, err := pipe.Exec(ctx)
	if err == nil {
		return cmds, nil
	}
	var again []int
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return cmds, err
	}
	pipe = rdb.Pipeline()
	for _, i := range again {
		cmds[i] = calls[i].Script.Eval(ctx, pipe, calls[i].Keys, calls[i].Args...)
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return cmds, err
		}
	}
	return cmds, nil
}
