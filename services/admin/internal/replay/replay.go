// Package replay runs range replays: it reads a time range of the raw topic
// (back through the normalizer and everything after it) or of the normalized
// topic (into one sink's replay topic), stamps every record with the job's
// replay id — so dedupe and the sinks' checkpoints process it again, once —
// and produces it at a bounded rate. Jobs are recorded on the compacted
// control topic closedloop.control.replay-jobs.v1 as they progress; a job
// that was running when the admin service stopped is reported INTERRUPTED
// when it starts again, never silently lost.
package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/expr"
	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/kafkaio"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/services/admin/internal/offsets"
	"github.com/closedloop/closedloop/services/admin/internal/randid"
)

// ErrNotFound names no job.
var ErrNotFound = fault.Errorf(fault.NotFound, "no such replay job")

// Producer is the part of kafkaio.Producer the jobs need.
type Producer interface {
	Produce(ctx context.Context, recs ...kafkaio.Record) error
}

// Jobs runs and remembers range replays. Safe for concurrent use.
type Jobs struct {
	brokers  []string
	topics   kafkaio.Topics
	sinks    map[string]bool
	producer Producer
	log      *slog.Logger
	offsets  *offsets.Reader

	mu      sync.Mutex
	jobs    map[string]*adminv1.ReplayJob
	cancels map[string]context.CancelFunc
	changed chan struct{}
	wg      sync.WaitGroup
	// stopping: the service shuts down; running jobs end INTERRUPTED.
	stopping atomic.Bool
}

// New returns Jobs; sinks are the sink services a normalized replay may target.
func New(brokers []string, topics kafkaio.Topics, sinks []string, producer Producer, log *slog.Logger) *Jobs {
	j := &Jobs{brokers: brokers, topics: topics, sinks: map[string]bool{}, producer: producer, log: log,
		offsets: offsets.New(brokers),
		jobs:    map[string]*adminv1.ReplayJob{}, cancels: map[string]context.CancelFunc{}, changed: make(chan struct{})}
	for _, s := range sinks {
		j.sinks[s] = true
	}
	return j
}

// Load reads the recorded jobs; running ones become INTERRUPTED (and are
// recorded so).
func (j *Jobs) Load(ctx context.Context) error {
	topic := j.topics.ReplayJobs()
	ends, err := j.offsets.Ends(ctx, []string{topic})
	if err != nil {
		return fmt.Errorf("replay jobs: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = offsets.ReadRange(rctx, j.brokers, topic, 0, 0, ends[topic][0], func(m kafka.Message) (bool, error) {
		var job adminv1.ReplayJob
		if m.Value != nil && protojson.Unmarshal(m.Value, &job) == nil {
			j.jobs[job.Id] = &job
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("replay jobs: %w", err)
	}
	for _, job := range j.jobs {
		if job.State == adminv1.ReplayState_REPLAY_STATE_RUNNING {
			job.State, job.FinishedAt = adminv1.ReplayState_REPLAY_STATE_INTERRUPTED, timestamppb.Now()
			job.Error = "the admin service stopped while the job ran; start it again to replay the rest"
			if err := j.record(ctx, job); err != nil {
				return err
			}
		}
	}
	return nil
}

// record writes the job to the jobs topic. A dry run only counts: it is
// never recorded (nor listed), only watched while it runs.
func (j *Jobs) record(ctx context.Context, job *adminv1.ReplayJob) error {
	if job.Request.GetDryRun() {
		return nil
	}
	b, err := protojson.Marshal(job)
	if err != nil {
		return err
	}
	return j.producer.Produce(context.WithoutCancel(ctx), kafkaio.Record{Topic: j.topics.ReplayJobs(), Key: []byte(job.Id), Value: b})
}

// snapshot copies a job under j.mu.
func (j *Jobs) snapshot(id string) *adminv1.ReplayJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	if job := j.jobs[id]; job != nil {
		return proto.Clone(job).(*adminv1.ReplayJob)
	}
	return nil
}

// update changes a job under j.mu and wakes the watchers.
func (j *Jobs) update(id string, fn func(*adminv1.ReplayJob)) *adminv1.ReplayJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	job := j.jobs[id]
	fn(job)
	close(j.changed)
	j.changed = make(chan struct{})
	return proto.Clone(job).(*adminv1.ReplayJob)
}

// Start validates req and starts the job.
func (j *Jobs) Start(ctx context.Context, req *adminv1.StartReplayRequest, by string) (*adminv1.ReplayJob, error) {
	var filter *expr.Bool
	switch req.From {
	case adminv1.ReplayFrom_REPLAY_FROM_RAW:
		if req.Sink != "" || req.Filter != "" {
			return nil, fault.Errorf(fault.Invalid, "a raw replay goes through the whole pipeline: sink and filter are for normalized replays (use source to narrow it)")
		}
	case adminv1.ReplayFrom_REPLAY_FROM_NORMALIZED:
		if !j.sinks[req.Sink] {
			return nil, fault.Errorf(fault.Invalid, "sink %q is not one of the sinks this admin serves (ADMIN_SINKS)", req.Sink)
		}
		if req.Filter != "" {
			var err error
			if filter, err = expr.CompileBool(req.Filter); err != nil {
				return nil, fault.Errorf(fault.Invalid, "filter: %w", err)
			}
		}
	default:
		return nil, fault.Errorf(fault.Invalid, "from must be REPLAY_FROM_RAW or REPLAY_FROM_NORMALIZED")
	}
	if req.Since == nil {
		return nil, fault.Errorf(fault.Invalid, "since is required: replays are of a time range")
	}
	if req.Until == nil {
		req.Until = timestamppb.Now()
	}
	if !req.Until.AsTime().After(req.Since.AsTime()) {
		return nil, fault.Errorf(fault.Invalid, "until must be after since")
	}
	if req.RatePerSecond <= 0 {
		req.RatePerSecond = 500
	}
	id := randid.New("rj_", 6)
	job := &adminv1.ReplayJob{Id: id, ReplayId: id, Request: req, State: adminv1.ReplayState_REPLAY_STATE_RUNNING,
		StartedBy: by, StartedAt: timestamppb.Now()}
	if err := j.record(ctx, job); err != nil {
		return nil, fault.Errorf(fault.Unavailable, "recording the job in Kafka: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	j.mu.Lock()
	j.jobs[id], j.cancels[id] = job, cancel
	j.mu.Unlock()
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		defer cancel()
		err := j.run(runCtx, id, req, filter)
		final := j.update(id, func(job *adminv1.ReplayJob) {
			job.FinishedAt = timestamppb.Now()
			switch {
			case err == nil:
				job.State = adminv1.ReplayState_REPLAY_STATE_DONE
			case errors.Is(err, context.Canceled) && j.stopping.Load():
				job.State, job.Error = adminv1.ReplayState_REPLAY_STATE_INTERRUPTED, "the admin service stopped while the job ran; start it again to replay the rest"
			case errors.Is(err, context.Canceled):
				job.State = adminv1.ReplayState_REPLAY_STATE_CANCELLED
			default:
				job.State, job.Error = adminv1.ReplayState_REPLAY_STATE_FAILED, err.Error()
			}
		})
		if rerr := j.record(context.Background(), final); rerr != nil {
			j.log.Error("replay job end not recorded", "job", id, "error", rerr.Error())
		}
		j.log.Info("replay job ended", "job", id, "state", final.State.String(), "produced", final.Produced, "matched", final.Matched, "scanned", final.Scanned)
	}()
	return j.snapshot(id), nil
}

// run reads the range partition by partition and replays what matches.
func (j *Jobs) run(ctx context.Context, id string, req *adminv1.StartReplayRequest, filter *expr.Bool) error {
	topic, target := j.topics.Raw, j.topics.Raw
	if req.From == adminv1.ReplayFrom_REPLAY_FROM_NORMALIZED {
		topic, target = j.topics.Normalized, j.topics.Replay(req.Sink)
	}
	since, until := req.Since.AsTime(), req.Until.AsTime()
	ends, err := j.offsets.Ends(ctx, []string{topic})
	if err != nil {
		return err
	}
	var byTime []kafka.OffsetRequest
	for p := range ends[topic] {
		byTime = append(byTime, kafka.TimeOffsetOf(p, since))
	}
	starts, err := j.offsets.Client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: byTime}})
	if err != nil {
		return err
	}
	type span struct {
		partition  int
		from, stop int64
	}
	var spans []span
	var total int64
	for _, p := range starts.Topics[topic] {
		stop := ends[topic][p.Partition]
		from := stop                 // nothing at or after since, unless the broker names an offset
		for off := range p.Offsets { // one entry: the first offset whose time is at or after since
			if off >= 0 && p.Error == nil {
				from = off
			}
		}
		if from < stop {
			spans = append(spans, span{p.Partition, from, stop})
			total += stop - from
		}
	}
	sort.Slice(spans, func(a, b int) bool { return spans[a].partition < spans[b].partition })
	j.update(id, func(job *adminv1.ReplayJob) { job.Total = total })
	limiter := rate.NewLimiter(rate.Limit(req.RatePerSecond), max(1, int(req.RatePerSecond/10)))
	lastRecord := time.Now()
	for _, sp := range spans {
		err := offsets.ReadRange(ctx, j.brokers, topic, sp.partition, sp.from, sp.stop, func(m kafka.Message) (bool, error) {
			matched := false
			var out kafkaio.Record
			if !m.Time.Before(since) && m.Time.Before(until) {
				var err error
				out, matched, err = j.prepare(m, req, filter, id, target)
				if err != nil {
					j.log.Warn("replay: record skipped", "job", id, "topic", topic, "partition", m.Partition, "offset", m.Offset, "error", err.Error())
				}
			}
			if matched && !req.DryRun {
				if err := limiter.Wait(ctx); err != nil {
					return false, err
				}
				if err := j.producer.Produce(ctx, out); err != nil {
					return false, fmt.Errorf("producing to %s: %w", target, err)
				}
			}
			snap := j.update(id, func(job *adminv1.ReplayJob) {
				job.Scanned++
				if matched {
					job.Matched++
					if !req.DryRun {
						job.Produced++
					}
				}
			})
			if time.Since(lastRecord) > time.Second {
				_ = j.record(ctx, snap)
				lastRecord = time.Now()
			}
			return true, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// prepare decodes a record, applies the filters and stamps the replay id.
func (j *Jobs) prepare(m kafka.Message, req *adminv1.StartReplayRequest, filter *expr.Bool, replayID, target string) (kafkaio.Record, bool, error) {
	rec := kafkaio.Record{Topic: target, Key: m.Key}
	for _, h := range m.Headers {
		if h.Key != "traceparent" && h.Key != "tracestate" { // a replay is a new trace
			rec.Headers = append(rec.Headers, h)
		}
	}
	if req.From == adminv1.ReplayFrom_REPLAY_FROM_RAW {
		var raw feedbackv1.RawWebhook
		if err := proto.Unmarshal(m.Value, &raw); err != nil {
			return rec, false, err
		}
		if req.Source != "" && raw.Source != req.Source {
			return rec, false, nil
		}
		raw.ReplayId = replayID
		rec.Value, _ = proto.Marshal(&raw)
		return rec, true, nil
	}
	var ev feedbackv1.FeedbackEvent
	if err := proto.Unmarshal(m.Value, &ev); err != nil {
		return rec, false, err
	}
	if req.Source != "" && ev.Source != req.Source {
		return rec, false, nil
	}
	if filter != nil {
		ok, err := filter.Eval(&ev)
		if err != nil || !ok {
			return rec, false, err
		}
	}
	ev.ReplayId = replayID
	rec.Value, _ = proto.Marshal(&ev)
	return rec, true, nil
}

// Cancel stops a running job.
func (j *Jobs) Cancel(id string) (*adminv1.ReplayJob, error) {
	j.mu.Lock()
	cancel, job := j.cancels[id], j.jobs[id]
	j.mu.Unlock()
	if job == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if cancel != nil {
		cancel()
	}
	// Wait briefly for the job to settle so the answer shows the end.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s := j.snapshot(id); s.State != adminv1.ReplayState_REPLAY_STATE_RUNNING {
			return s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return j.snapshot(id), nil
}

// List returns every job, newest first.
func (j *Jobs) List() []*adminv1.ReplayJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]*adminv1.ReplayJob, 0, len(j.jobs))
	for id, job := range j.jobs {
		if job.Request.GetDryRun() {
			if job.FinishedAt != nil && time.Since(job.FinishedAt.AsTime()) > 10*time.Minute {
				delete(j.jobs, id) // its watchers have long had the result
				delete(j.cancels, id)
			}
			continue
		}
		out = append(out, proto.Clone(job).(*adminv1.ReplayJob))
	}
	sort.Slice(out, func(a, b int) bool { return out[a].StartedAt.AsTime().After(out[b].StartedAt.AsTime()) })
	return out
}

// Watch calls send with the job now and after every change (at most every
// 200 ms) until it ends or ctx is done.
func (j *Jobs) Watch(ctx context.Context, id string, send func(*adminv1.ReplayJob) error) error {
	for {
		j.mu.Lock()
		ch := j.changed
		j.mu.Unlock()
		job := j.snapshot(id)
		if job == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if err := send(job); err != nil {
			return err
		}
		if job.State != adminv1.ReplayState_REPLAY_STATE_RUNNING {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop ends every running job as INTERRUPTED (recorded) and waits for them.
func (j *Jobs) Stop() {
	j.stopping.Store(true)
	j.mu.Lock()
	for _, c := range j.cancels {
		c()
	}
	j.mu.Unlock()
	j.wg.Wait()
}
