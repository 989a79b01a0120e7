package warehouse

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// LoopWindow is the window of the loop-closure summary.
const LoopWindow = 24 * time.Hour

// LoopSummary summarises loop_closure_since(since): the detractors, how
// many got a ticket, a public agent reply and a solved ticket (a response
// with several tickets counts once, by its earliest), and the median
// durations from the detractor's arrival.
func LoopSummary(ctx context.Context, pool *pgxpool.Pool, schema string, since time.Time) (*adminv1.LoopClosure, error) {
	fn := pgx.Identifier{schema, "loop_closure_since"}.Sanitize()
	out := &adminv1.LoopClosure{Since: timestamppb.New(since)}
	var toTicket, toReply, toSolved *float64
	err := pool.QueryRow(ctx, `
		WITH r AS (
			SELECT response_key, min(time_to_ticket) AS tt, min(time_to_first_reply) AS tr, min(time_to_solved) AS ts,
				bool_or(ticket_id IS NOT NULL) AS ticketed
			FROM `+fn+`($1) GROUP BY response_key)
		SELECT count(*), count(*) FILTER (WHERE ticketed), count(tr), count(ts),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM tt)),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM tr)),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ts))
		FROM r`, since).Scan(&out.Detractors, &out.Ticketed, &out.Replied, &out.Solved, &toTicket, &toReply, &toSolved)
	if err != nil {
		return nil, fmt.Errorf("loop closure: %w", err)
	}
	out.MedianToTicketSeconds, out.MedianToReplySeconds, out.MedianToSolvedSeconds = deref(toTicket), deref(toReply), deref(toSolved)
	rows, err := pool.Query(ctx, `
		SELECT ticket_system, count(DISTINCT response_key), count(DISTINCT response_key) FILTER (WHERE solved_at IS NOT NULL),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM time_to_solved))
		FROM `+fn+`($1) WHERE ticket_system IS NOT NULL GROUP BY ticket_system ORDER BY ticket_system`, since)
	if err != nil {
		return nil, fmt.Errorf("loop closure per helpdesk: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		s := &adminv1.LoopClosureSystem{}
		var med *float64
		if err := rows.Scan(&s.System, &s.Ticketed, &s.Solved, &med); err != nil {
			return nil, fmt.Errorf("loop closure per helpdesk: %w", err)
		}
		s.MedianToSolvedSeconds = deref(med)
		out.Systems = append(out.Systems, s)
	}
	return out, rows.Err()
}

func deref(f *float64) float64 {
	if f == nil {
		return 0
	}
	return *f
}

// Loop keeps the last loop-closure summary for the status and the metrics,
// recomputing it when it is older than MaxAge (one query for every reader
// in that time, whatever asks).
type Loop struct {
	Pool   *pgxpool.Pool
	Schema string
	MaxAge time.Duration
	Now    func() time.Time

	mu   sync.Mutex
	last *adminv1.LoopClosure
	at   time.Time
}

// Current is the summary over the last LoopWindow, at most MaxAge old; nil
// when it cannot be computed (the error says why).
func (l *Loop) Current(ctx context.Context) (*adminv1.LoopClosure, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.Now()
	if l.last != nil && now.Sub(l.at) < l.MaxAge {
		return l.last, nil
	}
	s, err := LoopSummary(ctx, l.Pool, l.Schema, now.Add(-LoopWindow))
	if err != nil {
		return nil, err
	}
	l.last, l.at = s, now
	return s, nil
}

// Instrument registers the loop-closure gauges, read from Current.
func (l *Loop) Instrument(meter metric.Meter) error {
	detractors, err := meter.Int64ObservableGauge("closedloop.loop.detractors", metric.WithUnit("{response}"),
		metric.WithDescription("Detractor responses received in the last 24 hours (test events excluded)."))
	if err != nil {
		return err
	}
	ticketed, err := meter.Float64ObservableGauge("closedloop.loop.ticketed_ratio", metric.WithUnit("1"),
		metric.WithDescription("Share of the last 24 hours' detractors with a helpdesk ticket."))
	if err != nil {
		return err
	}
	solved, err := meter.Float64ObservableGauge("closedloop.loop.solved_ratio", metric.WithUnit("1"),
		metric.WithDescription("Share of the last 24 hours' detractors whose ticket was solved."))
	if err != nil {
		return err
	}
	closure, err := meter.Float64ObservableGauge("closedloop.loop.closure_time.median", metric.WithUnit("s"),
		metric.WithDescription("Median time from a detractor's arrival to its ticket solved, over the last 24 hours' detractors with a solved ticket."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		s, err := l.Current(ctx)
		if err != nil {
			return nil // the status says why; a gauge without a value is no value
		}
		o.ObserveInt64(detractors, s.Detractors)
		if s.Detractors > 0 {
			o.ObserveFloat64(ticketed, float64(s.Ticketed)/float64(s.Detractors))
			o.ObserveFloat64(solved, float64(s.Solved)/float64(s.Detractors))
		}
		if s.Solved > 0 {
			o.ObserveFloat64(closure, s.MedianToSolvedSeconds)
		}
		return nil
	}, detractors, ticketed, solved, closure)
	return err
}
