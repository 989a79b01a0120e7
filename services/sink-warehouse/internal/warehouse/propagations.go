package warehouse

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/destinations/crm"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/sink"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Propagations writes the CRM destinations' unsubscribe propagations
// (closedloop.unsubscribes.v1) to the unsubscribe_propagations table, one
// row per unsubscribe and destination: a later outcome of the same one (a
// dead-lettered unsubscribe replayed and applied) replaces an earlier.
type Propagations struct {
	// Pool is set once the warehouse is open; until then batches wait.
	Pool   atomic.Pointer[pgxpool.Pool]
	Schema string
}

// Handle is the consumer's batch handler.
func (p *Propagations) Handle(ctx context.Context, batch []kafkaio.Delivery) []error {
	pool := p.Pool.Load()
	if pool == nil {
		return all(batch, fmt.Errorf("the warehouse is not open yet"))
	}
	errs := make([]error, len(batch))
	b := &pgx.Batch{}
	var idx []int
	table := pgx.Identifier{p.Schema, "unsubscribe_propagations"}.Sanitize()
	for i, d := range batch {
		var r sinkv1.Propagation
		if err := proto.Unmarshal(d.Msg.Value, &r); err != nil || r.EventId == "" || r.Destination == "" {
			errs[i] = kafkaio.Permanent(kafkaio.ReasonUndecodableRecord, fmt.Errorf("not a Propagation: %v", err))
			continue
		}
		var occurred any
		if r.OccurredAt != nil {
			occurred = r.OccurredAt.AsTime()
		}
		b.Queue(`INSERT INTO `+table+` (event_id, destination, kind, sink, email, person_id, source, provider, received_at, occurred_at,
			applied_at, result, detail, attempts) VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, $8, $9, $10, $11, $12, $13, $14)
			ON CONFLICT (event_id, destination) DO UPDATE SET result = excluded.result, detail = excluded.detail,
				applied_at = excluded.applied_at, attempts = excluded.attempts, _cl_recorded_at = now()
			WHERE excluded.applied_at > `+table+`.applied_at`,
			r.EventId, r.Destination, r.Kind, r.Sink, r.Email, r.PersonId, r.Source, r.Provider, r.ReceivedAt.AsTime(), occurred,
			r.AppliedAt.AsTime(), crm.ResultName(r.Result), r.Detail, r.Attempts)
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return sink.Errors(errs)
	}
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		for _, i := range idx {
			errs[i] = fmt.Errorf("writing unsubscribe propagations: %w", err)
		}
	}
	return sink.Errors(errs)
}

func all(batch []kafkaio.Delivery, err error) []error {
	out := make([]error, len(batch))
	for i := range out {
		out[i] = err
	}
	return out
}
