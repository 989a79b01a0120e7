package stack

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/closedloop/closedloop/libs/localinfra"
)

func TestRowsCountsTheWarehouseOnlyOnceItsIdsReachTheTarget(t *testing.T) {
	pg := localinfra.PostgresForTest(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	r := &Rows{Pool: pool}
	if got, err := r.MaxID(ctx); got != 0 || err != nil {
		t.Fatalf("MaxID before the sink made the table = %d, %v; want 0, nil", got, err)
	}
	if ok, err := r.Reached(ctx, 1); ok || err != nil {
		t.Fatalf("Reached(1) with no table = %v, %v; want false, nil", ok, err)
	}
	for _, q := range []string{
		`CREATE SCHEMA closedloop`,
		`CREATE TABLE closedloop.feedback_events (_cl_row_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id TEXT NOT NULL UNIQUE)`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	insert := func(ids ...string) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO closedloop.feedback_events (event_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, ids); err != nil {
			t.Fatal(err)
		}
	}
	insert("a", "b", "c")
	if got, err := r.MaxID(ctx); got != 3 || err != nil {
		t.Fatalf("MaxID after 3 rows = %d, %v", got, err)
	}
	if ok, _ := r.Reached(ctx, 3); !ok {
		t.Fatal("3 rows did not reach 3")
	}
	if ok, _ := r.Reached(ctx, 4); ok {
		t.Fatal("3 rows reached 4")
	}
	// Two inserts skipped by ON CONFLICT use ids 4 and 5 without a row: the
	// ids reach 5, the rows are 4, and only a count can tell.
	insert("a", "b", "d")
	if got, err := r.MaxID(ctx); got != 6 || err != nil {
		t.Fatalf("MaxID after a batch with two conflicts = %d, %v; want 6 (ids 4 and 5 skipped)", got, err)
	}
	if ok, err := r.Reached(ctx, 5); ok || err != nil {
		t.Fatalf("4 rows (ids up to 6) reached 5: %v, %v", ok, err)
	}
	// Until another row comes the answer cannot change; then it does.
	if ok, _ := r.Reached(ctx, 5); ok {
		t.Fatal("4 rows reached 5 on the second poll")
	}
	insert("e")
	if ok, _ := r.Reached(ctx, 5); !ok {
		t.Fatal("5 rows did not reach 5")
	}
	if err := r.Wait(ctx, 5, time.Millisecond, time.Second); err != nil {
		t.Fatal(err)
	}
	err = r.Wait(ctx, 9, time.Millisecond, 20*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "has 5 of 9 rows") {
		t.Fatalf("Wait for 9 of 5 rows = %v, want a timeout naming 5 of 9", err)
	}
	// Only a missing table reads as no row: any other failure is one.
	pool.Close()
	if _, err := r.MaxID(ctx); err == nil {
		t.Fatal("MaxID on a closed pool did not fail")
	}
}
