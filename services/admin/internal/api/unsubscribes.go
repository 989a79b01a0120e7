package api

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/fault"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	"github.com/closedloop/closedloop/services/admin/internal/offsets"
)

// UnsubscribeScan is how many of the latest records of each partition of
// the unsubscribes topic ListUnsubscribes reads (the full history is the
// warehouse's unsubscribe_propagations table).
const UnsubscribeScan = 20000

// ListUnsubscribes implements AdminService.
func (s *Server) ListUnsubscribes(ctx context.Context, req *adminv1.ListUnsubscribesRequest) (*adminv1.ListUnsubscribesResponse, error) {
	if req.Limit < 0 || req.Limit > 1000 {
		return nil, fault.Errorf(fault.Invalid, "limit must be between 0 (default 50) and 1000")
	}
	limit := int(req.Limit)
	if limit == 0 {
		limit = 50
	}
	topic := s.o.Topics.Unsubscribes()
	ends, err := s.o.Offsets.Ends(ctx, []string{topic})
	if err == nil {
		var starts map[string]map[int]int64
		if starts, err = s.o.Offsets.Starts(ctx, []string{topic}); err == nil {
			return s.scanUnsubscribes(ctx, req, limit, topic, starts[topic], ends[topic])
		}
	}
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		return &adminv1.ListUnsubscribesResponse{}, nil // no CRM destination has recorded one yet
	}
	return nil, fault.Wrap(fault.Unavailable, fmt.Errorf("reading %s: %w", topic, err))
}

func (s *Server) scanUnsubscribes(ctx context.Context, req *adminv1.ListUnsubscribesRequest, limit int, topic string, starts, ends map[int]int64) (*adminv1.ListUnsubscribesResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var since time.Time
	if req.Since != nil {
		since = req.Since.AsTime()
	}
	// The latest record per unsubscribe and destination (a replayed one
	// is recorded again).
	latest := map[string]*sinkv1.Propagation{}
	scanned := 0
	for p, end := range ends {
		from := max(starts[p], end-UnsubscribeScan)
		err := offsets.ReadRange(ctx, s.o.Brokers, topic, p, from, end, func(m kafka.Message) (bool, error) {
			scanned++
			var r sinkv1.Propagation
			if proto.Unmarshal(m.Value, &r) != nil {
				return true, nil
			}
			switch {
			case req.Email != "" && !strings.EqualFold(r.Email, req.Email),
				req.Destination != "" && r.Destination != req.Destination,
				req.Result != sinkv1.PropagationResult_PROPAGATION_RESULT_UNSPECIFIED && r.Result != req.Result,
				!since.IsZero() && r.AppliedAt.AsTime().Before(since):
				return true, nil
			}
			key := r.EventId + "\x00" + r.Destination
			if prev := latest[key]; prev == nil || !r.AppliedAt.AsTime().Before(prev.AppliedAt.AsTime()) {
				latest[key] = &r
			}
			return true, nil
		})
		if err != nil {
			return nil, fault.Wrap(fault.Unavailable, fmt.Errorf("reading %s: %w", topic, err))
		}
	}
	out := make([]*sinkv1.Propagation, 0, len(latest))
	for _, r := range latest {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].AppliedAt.AsTime(), out[j].AppliedAt.AsTime()
		if !a.Equal(b) {
			return a.After(b)
		}
		return out[i].EventId+out[i].Destination > out[j].EventId+out[j].Destination
	})
	return &adminv1.ListUnsubscribesResponse{Propagations: out[:min(limit, len(out))], Scanned: int32(scanned)}, nil
}
