// Package e2e runs closedloop end to end: the dev broker, redis-server and
// PostgreSQL as real processes, every service binary as its own process, and
// signed webhooks over HTTP. Each test builds its own pipeline (topics,
// consumer groups, Redis keys and warehouse schema of its own) on the shared
// infrastructure started once in TestMain.
package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/closedloop/closedloop/libs/localinfra"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

var infra struct {
	binDir  string
	dir     string
	broker  *stack.Broker
	redis   *localinfra.Proc
	pg      *localinfra.Postgres
	skipWhy string
}

// Each test runs a pipeline of its own (topics, consumer groups, Redis key
// prefix, warehouse schema; its own broker or Redis where it stops them), so
// the tests run in parallel (make test: four at a time; they mostly wait).
// A test that times something stays serial: it runs first, alone.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "closedloop-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	infra.dir = dir
	infra.binDir = filepath.Join(dir, "bin")
	root, err := stack.RepoRoot()
	if err == nil {
		err = stack.Build(ctx, root, infra.binDir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		return 1
	}
	infra.redis, err = localinfra.StartRedis(ctx, dir)
	if err != nil {
		return missing(m, err)
	}
	defer infra.redis.Stop()
	infra.pg, err = localinfra.StartPostgres(ctx)
	if err != nil {
		return missing(m, err)
	}
	defer infra.pg.Stop()
	infra.broker, err = stack.StartBroker(ctx, infra.binDir, dir, 0, 3, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer infra.broker.Stop()
	return m.Run()
}

// missing skips the suite on a developer machine without the servers, but
// fails it under CI, where their absence is a broken set-up.
func missing(m *testing.M, err error) int {
	if os.Getenv("CI") != "" || !errors.Is(err, localinfra.ErrNotInstalled) {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	infra.skipWhy = err.Error()
	return m.Run()
}

func requireInfra(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	if infra.skipWhy != "" {
		t.Skip("end-to-end test needs " + infra.skipWhy)
	}
}
