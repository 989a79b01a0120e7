package stack

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// warehouse is the table the benches wait on.
const warehouse = "closedloop.feedback_events"

// Rows tells a bench how full the warehouse is without loading the
// PostgreSQL it measures. A `SELECT count(*)` every few milliseconds reads
// the whole table each time: in `go run ./tools/sinkbench -n 300000` (a poll
// every 10 ms) those scans were a third of PostgreSQL's CPU, counted as the
// sink's, and slowed the sink they measured (docs/benchmarks.md, twelfth
// pass). A poll here reads the highest row id (one probe of the primary
// key's index); the rows are counted only once the ids handed out reach the
// number waited for: the table's identity column gives each row its own id,
// from 1, and an insert that ON CONFLICT skips uses one without a row, so
// there are never more rows than the highest id.
type Rows struct {
	Pool *pgxpool.Pool
	// rows were counted when the highest id was at: the count holds until
	// a higher id comes.
	rows, at int64
}

// undefinedTable is PostgreSQL's SQLSTATE for a relation that does not exist.
const undefinedTable = "42P01"

// MaxID is the highest row id committed so far: 0 with no row, or before
// the sink has created the table.
func (r *Rows) MaxID(ctx context.Context) (int64, error) {
	var id int64
	err := r.Pool.QueryRow(ctx, `SELECT coalesce(max(_cl_row_id), 0) FROM `+warehouse).Scan(&id)
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == undefinedTable {
		return 0, nil
	}
	return id, err
}

// Reached reports whether the warehouse holds at least n rows.
func (r *Rows) Reached(ctx context.Context, n int) (bool, error) {
	id, err := r.MaxID(ctx)
	if err != nil || id < int64(n) {
		return false, err
	}
	if id != r.at {
		if err := r.Pool.QueryRow(ctx, `SELECT count(*) FROM `+warehouse).Scan(&r.rows); err != nil {
			return false, err
		}
		r.at = id
	}
	return r.rows >= int64(n), nil
}

// Wait polls Reached every poll until it holds; after timeout (or when ctx
// ends) it fails with the number of rows there are.
func (r *Rows) Wait(ctx context.Context, n int, poll, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := r.Reached(ctx, n)
		if ok || err != nil {
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var got int64
			if err := r.Pool.QueryRow(context.WithoutCancel(ctx), `SELECT count(*) FROM `+warehouse).Scan(&got); err != nil {
				return fmt.Errorf("the warehouse's rows after %s: %w", timeout, err)
			}
			return fmt.Errorf("the warehouse has %d of %d rows after %s", got, n, timeout)
		}
		time.Sleep(poll)
	}
}
