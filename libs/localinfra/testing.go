package localinfra

import (
	"context"
	"errors"
	"os"
	"testing"
)

// RedisForTest starts a redis-server for the test and stops it at cleanup.
// When redis-server is not installed the test is skipped, except under CI
// (CI=true), where a missing server is a broken set-up and fails the test.
func RedisForTest(t testing.TB) string {
	t.Helper()
	p, err := StartRedis(context.Background(), t.TempDir())
	return mustHave(t, p, err).Addr
}

// PostgresForTest starts PostgreSQL for the test (skipped like RedisForTest).
func PostgresForTest(t testing.TB) *Postgres {
	t.Helper()
	p, err := StartPostgres(context.Background())
	if err != nil {
		mustHave[*Proc](t, nil, err)
	}
	t.Cleanup(p.Stop)
	return p
}

func mustHave[P interface{ Stop() }](t testing.TB, p P, err error) P {
	t.Helper()
	if err != nil {
		if errors.Is(err, ErrNotInstalled) && os.Getenv("CI") == "" {
			t.Skipf("skipping: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}
