package warehouse

import (
	"context"
	"fmt"
	"testing"

	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
)

// The warehouse's "fake" is real PostgreSQL; failures are injected by a
// trigger that refuses an event's next n inserts, as unavailable (SQLSTATE
// 40001, serialization failure: retryable) or as rejected data (23514, a
// check violation: permanent). Counting uses a sequence per event, which
// does not roll back with the failed insert.
func TestTheWarehouseDestinationPassesTheContract(t *testing.T) {
	p := pool(t)
	ctx := context.Background()
	const schema = "contract"
	if err := Migrate(ctx, p, schema); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE contract.sinktest_failures (event_id text PRIMARY KEY, code text NOT NULL, seq text NOT NULL, n bigint NOT NULL)`,
		`CREATE FUNCTION contract.sinktest_fail() RETURNS trigger LANGUAGE plpgsql AS $$
		DECLARE f contract.sinktest_failures;
		BEGIN
			SELECT * INTO f FROM contract.sinktest_failures WHERE event_id = NEW.event_id;
			IF FOUND AND nextval(f.seq::regclass) <= f.n THEN
				RAISE EXCEPTION 'sinktest: refused %', NEW.event_id USING ERRCODE = f.code;
			END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER sinktest_fail BEFORE INSERT ON contract.feedback_events FOR EACH ROW EXECUTE FUNCTION contract.sinktest_fail()`,
	} {
		if _, err := p.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	seq := 0
	sinktest.Run(t, sinktest.Harness{
		New: func(*testing.T) sink.Destination { return NewWriter(p, schema) },
		Outcomes: func(t *testing.T) map[string]int {
			rows, err := p.Query(ctx, `SELECT event_id, count(*) FROM contract.feedback_events GROUP BY event_id`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			out := map[string]int{}
			for rows.Next() {
				var id string
				var n int
				if err := rows.Scan(&id, &n); err != nil {
					t.Fatal(err)
				}
				out[id] = n
			}
			return out
		},
		Fail: func(t *testing.T, id string, f sinktest.Failure, n int) {
			code := map[sinktest.Failure]string{sinktest.Unavailable: "40001", sinktest.Rejected: "23514"}[f]
			seq++
			name := fmt.Sprintf("contract.sinktest_seq_%d", seq)
			if _, err := p.Exec(ctx, `CREATE SEQUENCE `+name); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Exec(ctx, `INSERT INTO contract.sinktest_failures VALUES ($1, $2, $3, $4)`, id, code, name, n); err != nil {
				t.Fatal(err)
			}
		},
		// A database answers no 429.
		Supports: []sinktest.Failure{sinktest.Unavailable, sinktest.Rejected},
	})
}
