// Package backfill runs backfill jobs and reconciliation in the admin
// service: it lists a source's history through its provider's API
// (libs/pull), turns every item into the raw record its webhook would have
// made (RawWebhook.origin "backfill" or "reconcile") and produces it to the
// raw topic, where the normalizer maps and dedupes it like any webhook —
// a response that already arrived adds nothing, a newer version of it adds
// a version.
//
// With Redis (the normalizer's dedupe store), a job first asks which items
// the pipeline has already seen and produces only the others: a
// reconciliation of a source with nothing missing costs only the listing
// calls, and what it produces is exactly what the webhooks missed.
//
// Jobs and their cursors are recorded on the compacted control topic
// closedloop.control.backfill-jobs.v1 after every page (after the page's
// records are durable): a job that was running when the admin stopped —
// even by kill -9 — resumes at its cursor when the admin starts again,
// refetching at most the page in flight (whose records dedupe). One job
// per source runs at a time.
package backfill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/pull"
	"github.com/closedloop/closedloop/libs/retry"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/services/admin/internal/offsets"
	"github.com/closedloop/closedloop/services/admin/internal/randid"
)

// ErrNotFound names no job.
var ErrNotFound = fault.Errorf(fault.NotFound, "no such backfill job")

// Producer is the part of kafkaio.Producer the jobs need.
type Producer interface {
	Produce(ctx context.Context, recs ...kafkaio.Record) error
}

// Seen asks the dedupe store which items the pipeline has received
// (idempotency.Store.Seen).
type Seen interface {
	Seen(ctx context.Context, scope string, items [][]string) ([]bool, error)
}

// Options configure Jobs.
type Options struct {
	Brokers  []string
	Topics   kafkaio.Topics
	Producer Producer
	Log      *slog.Logger
	Pipeline func() *config.Pipeline
	// Seen is the dedupe store; nil: every item is produced (the normalizer
	// still dedupes; already_seen stays 0).
	Seen Seen
	// Lookup resolves the api keys' references (os.LookupEnv).
	Lookup func(string) (string, bool)
	HTTP   *http.Client
	Meter  metric.Meter
	// RetryFor bounds how long a job retries a provider that keeps failing
	// (5xx, timeouts) before it fails (default 10m).
	RetryFor time.Duration
}

// Jobs runs and remembers backfill jobs. Safe for concurrent use.
type Jobs struct {
	o       Options
	offsets *offsets.Reader

	mu      sync.Mutex
	jobs    map[string]*adminv1.BackfillJob
	cancels map[string]context.CancelFunc
	changed chan struct{}
	wg      sync.WaitGroup
	// stopping: the service shuts down; running jobs stay RUNNING on the
	// topic and resume at the next start.
	stopping atomic.Bool

	items, requests, found, checked metric.Int64Counter
}

// New returns Jobs.
func New(o Options) *Jobs {
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 10 * time.Minute
	}
	j := &Jobs{o: o, offsets: offsets.New(o.Brokers), jobs: map[string]*adminv1.BackfillJob{},
		cancels: map[string]context.CancelFunc{}, changed: make(chan struct{})}
	m := o.Meter
	j.items, _ = m.Int64Counter("closedloop.backfill.items", metric.WithUnit("{item}"),
		metric.WithDescription("Items fetched from a provider's API by backfills and reconciliation, by source, kind and result (produced, seen, counted in a dry run)."))
	j.requests, _ = m.Int64Counter("closedloop.backfill.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests made to a provider's API by backfills and reconciliation, by source."))
	j.found, _ = m.Int64Counter("closedloop.reconcile.found", metric.WithUnit("{event}"),
		metric.WithDescription("Events the pipeline had not received by webhook, found by reconciliation, by source."))
	j.checked, _ = m.Int64Counter("closedloop.reconcile.checked", metric.WithUnit("{event}"),
		metric.WithDescription("Events the provider's API listed in reconciliation windows, by source."))
	_, _ = m.Int64ObservableGauge("closedloop.reconcile.found_24h", metric.WithUnit("{event}"),
		metric.WithDescription("Events found only by reconciliation in the last 24 hours, by source (from the recorded runs)."),
		metric.WithInt64Callback(func(_ context.Context, obs metric.Int64Observer) error {
			for _, r := range j.Reconciliation() {
				obs.Observe(r.Found_24H, metric.WithAttributes(attribute.String("source", r.Source)))
			}
			return nil
		}))
	return j
}

// Load reads the recorded jobs and resumes the ones that were running;
// reconciliation runs older than two days are deleted (tombstones).
func (j *Jobs) Load(ctx context.Context) error {
	topic := j.o.Topics.BackfillJobs()
	ends, err := j.offsets.Ends(ctx, []string{topic})
	if err != nil {
		return fmt.Errorf("backfill jobs: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = offsets.ReadRange(rctx, j.o.Brokers, topic, 0, 0, ends[topic][0], func(m kafka.Message) (bool, error) {
		if m.Value == nil {
			delete(j.jobs, string(m.Key))
			return true, nil
		}
		var job adminv1.BackfillJob
		if protojson.Unmarshal(m.Value, &job) == nil {
			j.jobs[job.Id] = &job
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("backfill jobs: %w", err)
	}
	var resume []string
	for id, job := range j.jobs {
		switch {
		case job.State == adminv1.BackfillState_BACKFILL_STATE_RUNNING:
			resume = append(resume, id)
		case job.Kind == adminv1.BackfillKind_BACKFILL_KIND_RECONCILE && job.FinishedAt != nil && time.Since(job.FinishedAt.AsTime()) > 48*time.Hour:
			delete(j.jobs, id)
			_ = j.o.Producer.Produce(ctx, kafkaio.Record{Topic: topic, Key: []byte(id), Value: nil})
		}
	}
	sort.Strings(resume)
	for _, id := range resume {
		j.mu.Lock()
		job := j.jobs[id]
		job.Resumed++
		j.mu.Unlock()
		j.o.Log.Info("resuming a backfill job", "job", id, "source", job.Request.GetSource(), "cursor", job.Cursor, "produced", job.Produced)
		j.launch(ctx, id)
	}
	return nil
}

// record writes the job to the jobs topic.
func (j *Jobs) record(ctx context.Context, job *adminv1.BackfillJob) error {
	b, err := protojson.Marshal(job)
	if err != nil {
		return err
	}
	return j.o.Producer.Produce(context.WithoutCancel(ctx), kafkaio.Record{Topic: j.o.Topics.BackfillJobs(), Key: []byte(job.Id), Value: b})
}

// update changes a job under j.mu and wakes the watchers.
func (j *Jobs) update(id string, fn func(*adminv1.BackfillJob)) *adminv1.BackfillJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	job := j.jobs[id]
	fn(job)
	job.UpdatedAt = timestamppb.Now()
	close(j.changed)
	j.changed = make(chan struct{})
	return proto.Clone(job).(*adminv1.BackfillJob)
}

func (j *Jobs) source(name string) (config.Source, error) {
	for _, s := range j.o.Pipeline().Sources {
		if s.Name == name {
			if s.API == nil {
				return s, fault.Errorf(fault.Invalid, "source %s has no api block: closedloop cannot read its history (docs/backfill.md)", name)
			}
			return s, nil
		}
	}
	return config.Source{}, fault.Errorf(fault.NotFound, "no source %q in the pipeline file", name)
}

// Start validates req and starts a job.
func (j *Jobs) Start(ctx context.Context, req *adminv1.StartBackfillRequest, kind adminv1.BackfillKind, by string) (*adminv1.BackfillJob, error) {
	src, err := j.source(req.Source)
	if err != nil {
		return nil, err
	}
	if req.Since == nil {
		return nil, fault.Errorf(fault.Invalid, "since is required: a backfill is of a time range")
	}
	if req.Until == nil {
		req.Until = timestamppb.Now()
	}
	if req.Until.AsTime().Before(req.Since.AsTime()) {
		return nil, fault.Errorf(fault.Invalid, "until (%s) is before since (%s)", req.Until.AsTime().Format(time.RFC3339), req.Since.AsTime().Format(time.RFC3339))
	}
	if req.RatePerSecond < 0 {
		return nil, fault.Errorf(fault.Invalid, "rate_per_second must not be negative")
	}
	if req.RatePerSecond == 0 || int(req.RatePerSecond) > src.API.RatePerSecond {
		req.RatePerSecond = int32(src.API.RatePerSecond)
	}
	if _, err := config.ResolveSecret(src.API.KeyRef, j.o.Lookup); err != nil {
		return nil, fault.Errorf(fault.Invalid, "source %s: api.key: %v", src.Name, err)
	}
	prefix := "bf_"
	if kind == adminv1.BackfillKind_BACKFILL_KIND_RECONCILE {
		prefix = "rc_"
	}
	id := randid.New(prefix, 6)
	job := &adminv1.BackfillJob{Id: id, Request: req, Kind: kind, State: adminv1.BackfillState_BACKFILL_STATE_RUNNING,
		StartedBy: by, StartedAt: timestamppb.Now(), UpdatedAt: timestamppb.Now()}
	j.mu.Lock()
	for _, other := range j.jobs {
		if other.State == adminv1.BackfillState_BACKFILL_STATE_RUNNING && other.Request.GetSource() == req.Source {
			j.mu.Unlock()
			return nil, fault.Errorf(fault.Conflict, "job %s of source %s is running (one job per source at a time; cancel it or wait)", other.Id, req.Source)
		}
	}
	j.jobs[id] = job
	j.mu.Unlock()
	if err := j.record(ctx, job); err != nil {
		j.mu.Lock()
		delete(j.jobs, id)
		j.mu.Unlock()
		return nil, fault.Errorf(fault.Unavailable, "recording the job in Kafka: %w", err)
	}
	j.o.Log.Info("backfill started", "job", id, "kind", kind.String(), "source", req.Source, "since", req.Since.AsTime(), "until", req.Until.AsTime(),
		"dry_run", req.DryRun, "rate_per_second", req.RatePerSecond, "by", by)
	j.launch(ctx, id)
	return proto.Clone(job).(*adminv1.BackfillJob), nil
}

// launch runs job id in the background and records how it ended.
func (j *Jobs) launch(ctx context.Context, id string) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	j.mu.Lock()
	j.cancels[id] = cancel
	j.mu.Unlock()
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		defer cancel()
		err := j.run(runCtx, id)
		if errors.Is(err, context.Canceled) && j.stopping.Load() {
			return // stays RUNNING on the topic: resumed at the next start
		}
		final := j.update(id, func(job *adminv1.BackfillJob) {
			job.FinishedAt = timestamppb.Now()
			switch {
			case err == nil:
				job.State, job.Error = adminv1.BackfillState_BACKFILL_STATE_DONE, ""
			case errors.Is(err, context.Canceled):
				job.State = adminv1.BackfillState_BACKFILL_STATE_CANCELLED
			default:
				job.State, job.Error = adminv1.BackfillState_BACKFILL_STATE_FAILED, err.Error()
			}
		})
		if rerr := j.record(context.Background(), final); rerr != nil {
			j.o.Log.Error("recording the end of a backfill job", "job", id, "error", rerr.Error())
		}
		j.o.Log.Info("backfill ended", "job", id, "state", final.State.String(), "fetched", final.Fetched, "produced", final.Produced,
			"already_seen", final.AlreadySeen, "requests", final.Requests, "error", final.Error)
		j.mu.Lock()
		delete(j.cancels, id)
		j.mu.Unlock()
	}()
}

// run pages through the job's range from its cursor.
func (j *Jobs) run(ctx context.Context, id string) error {
	j.mu.Lock()
	job := proto.Clone(j.jobs[id]).(*adminv1.BackfillJob)
	j.mu.Unlock()
	req := job.Request
	src, err := j.source(req.Source)
	if err != nil {
		return err
	}
	key, err := config.ResolveSecret(src.API.KeyRef, j.o.Lookup)
	if err != nil {
		return fault.Errorf(fault.Invalid, "source %s: api.key: %v", src.Name, err)
	}
	limiter := pull.NewLimiter(int(req.RatePerSecond))
	lister, err := pull.For(src.Provider, pull.Options{BaseURL: src.API.BaseURL, Key: string(key.Reveal()), Forms: src.API.Forms,
		Partial: src.API.Partial, Limiter: limiter, HTTP: j.o.HTTP})
	if err != nil {
		return err
	}
	reconcile := job.Kind == adminv1.BackfillKind_BACKFILL_KIND_RECONCILE
	origin := "backfill"
	if reconcile {
		origin = "reconcile"
	}
	w := pull.Window{Since: req.Since.AsTime(), Until: req.Until.AsTime(), ByUpdate: reconcile}
	srcAttr := attribute.String("source", src.Name)
	kindAttr := attribute.String("kind", origin)
	cursor := job.Cursor
	var failingSince time.Time
	for attempt := 0; ; {
		before := limiter.Requests()
		page, seen, err := j.fetch(ctx, lister, w, cursor, src.Name)
		j.requests.Add(ctx, limiter.Requests()-before, metric.WithAttributes(srcAttr))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !pull.Retryable(err) {
				return err
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) > j.o.RetryFor {
				return fmt.Errorf("the provider kept failing for %s: %w", j.o.RetryFor, err)
			}
			attempt++
			j.update(id, func(job *adminv1.BackfillJob) { job.Error = "retrying: " + err.Error() })
			if err := retry.Sleep(ctx, retry.Backoff(attempt, time.Second, time.Minute)); err != nil {
				return err
			}
			continue
		}
		attempt, failingSince = 0, time.Time{}
		var recs []kafkaio.Record
		var nSeen, nNew int64
		var reached time.Time
		descending := false
		if n := len(page.Items); n > 0 {
			reached, descending = page.Items[n-1].At, page.Items[n-1].At.Before(page.Items[0].At)
		}
		now := timestamppb.Now()
		for i, it := range page.Items {
			if seen != nil && seen[i] {
				nSeen++
				continue
			}
			nNew++
			if req.DryRun {
				continue
			}
			raw := &feedbackv1.RawWebhook{EventId: it.EventID, Source: src.Name, Provider: src.Provider, EventType: it.EventType,
				ReceivedAt: now, Body: it.Body, Headers: map[string]string{"content-type": "application/json"}, Origin: origin, OriginJob: id}
			v, err := proto.Marshal(raw)
			if err != nil {
				return err
			}
			recs = append(recs, kafkaio.Record{Topic: j.o.Topics.Raw, Key: []byte(it.EventID), Value: v})
		}
		if len(recs) > 0 {
			if err := j.o.Producer.Produce(ctx, recs...); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(err, kafkaio.ErrRecordTooLarge) {
					return fmt.Errorf("an item of page %q does not fit in the raw topic (raise its max.message.bytes): %w", cursor, err)
				}
				// Kafka is down: the same page again later (its records
				// dedupe), for as long as a failing provider is retried.
				if failingSince.IsZero() {
					failingSince = time.Now()
				}
				if time.Since(failingSince) > j.o.RetryFor {
					return fmt.Errorf("producing to Kafka kept failing for %s: %w", j.o.RetryFor, err)
				}
				attempt++
				j.update(id, func(job *adminv1.BackfillJob) { job.Error = "retrying: producing to Kafka: " + err.Error() })
				if err := retry.Sleep(ctx, retry.Backoff(attempt, time.Second, time.Minute)); err != nil {
					return err
				}
				continue
			}
		}
		result := "produced"
		if req.DryRun {
			result = "counted"
		}
		j.items.Add(ctx, nNew, metric.WithAttributes(srcAttr, kindAttr, attribute.String("result", result)))
		j.items.Add(ctx, nSeen, metric.WithAttributes(srcAttr, kindAttr, attribute.String("result", "seen")))
		if reconcile && !req.DryRun {
			j.found.Add(ctx, nNew, metric.WithAttributes(srcAttr))
			j.checked.Add(ctx, nNew+nSeen, metric.WithAttributes(srcAttr))
		}
		snap := j.update(id, func(job *adminv1.BackfillJob) {
			job.Cursor = page.Next
			job.Pages++
			job.Fetched += int64(len(page.Items))
			job.Produced += nNew
			job.AlreadySeen += nSeen
			job.Requests += limiter.Requests() - before
			job.Error = ""
			if !reached.IsZero() {
				job.Reached, job.Descending = timestamppb.New(reached), descending
			}
		})
		// The page's records are durable; now its cursor is.
		if err := j.record(ctx, snap); err != nil {
			j.o.Log.Warn("recording a backfill job's progress", "job", id, "error", err.Error())
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}

// fetch lists one page and, with a dedupe store, which of its items the
// pipeline has seen.
func (j *Jobs) fetch(ctx context.Context, l pull.Lister, w pull.Window, cursor, source string) (pull.Page, []bool, error) {
	page, err := l.List(ctx, w, cursor)
	if err != nil || j.o.Seen == nil || len(page.Items) == 0 {
		return page, nil, err
	}
	keys := make([][]string, len(page.Items))
	for i, it := range page.Items {
		keys[i] = it.DedupeKeys()
	}
	seen, err := j.o.Seen.Seen(ctx, source, keys)
	if err != nil {
		return page, nil, fault.Wrap(fault.Unavailable, fmt.Errorf("asking the dedupe store (Redis): %w", err))
	}
	return page, seen, nil
}

// Get returns a job.
func (j *Jobs) Get(id string) (*adminv1.BackfillJob, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	job := j.jobs[id]
	if job == nil {
		return nil, ErrNotFound
	}
	return proto.Clone(job).(*adminv1.BackfillJob), nil
}

// Cancel stops a running job.
func (j *Jobs) Cancel(id string) (*adminv1.BackfillJob, error) {
	j.mu.Lock()
	job, cancel := j.jobs[id], j.cancels[id]
	j.mu.Unlock()
	if job == nil {
		return nil, ErrNotFound
	}
	if cancel == nil {
		return nil, fault.Errorf(fault.Conflict, "job %s is not running (%s)", id, job.State.String())
	}
	cancel()
	// The job records its end itself (CANCELLED); wait for it, briefly.
	for range 100 {
		if cur, err := j.Get(id); err == nil && cur.State != adminv1.BackfillState_BACKFILL_STATE_RUNNING {
			return cur, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return j.Get(id)
}

// List returns the jobs (of source, or all), newest first.
func (j *Jobs) List(source string) []*adminv1.BackfillJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []*adminv1.BackfillJob
	for _, job := range j.jobs {
		if source == "" || job.Request.GetSource() == source {
			out = append(out, proto.Clone(job).(*adminv1.BackfillJob))
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].StartedAt.AsTime().After(out[b].StartedAt.AsTime()) })
	return out
}

// Watch sends the job on every change until it ends or ctx does.
func (j *Jobs) Watch(ctx context.Context, id string, send func(*adminv1.BackfillJob) error) error {
	for {
		j.mu.Lock()
		job, changed := j.jobs[id], j.changed
		var snap *adminv1.BackfillJob
		if job != nil {
			snap = proto.Clone(job).(*adminv1.BackfillJob)
		}
		j.mu.Unlock()
		if snap == nil {
			return ErrNotFound
		}
		if err := send(snap); err != nil {
			return err
		}
		if snap.State != adminv1.BackfillState_BACKFILL_STATE_RUNNING {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// RunSchedule starts each source's reconciliation every reconcile.every
// (reading the pipeline file each time, so a reload applies), over
// [now − window, now − settle], unless a job of the source is running.
func (j *Jobs) RunSchedule(ctx context.Context) error {
	last := map[string]time.Time{}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := time.Now()
		for _, s := range j.o.Pipeline().Sources {
			if s.API == nil || s.API.Reconcile == nil {
				continue
			}
			r := s.API.Reconcile
			if now.Sub(last[s.Name]) < r.Every.Duration {
				continue
			}
			if last[s.Name].IsZero() {
				// After a restart, the last run is the recorded one.
				for _, job := range j.List(s.Name) {
					if job.Kind == adminv1.BackfillKind_BACKFILL_KIND_RECONCILE {
						last[s.Name] = job.StartedAt.AsTime()
						break
					}
				}
				if now.Sub(last[s.Name]) < r.Every.Duration {
					continue
				}
			}
			last[s.Name] = now
			req := &adminv1.StartBackfillRequest{Source: s.Name, Since: timestamppb.New(now.Add(-r.Window.Duration)), Until: timestamppb.New(now.Add(-r.Settle.Duration))}
			if _, err := j.Start(ctx, req, adminv1.BackfillKind_BACKFILL_KIND_RECONCILE, "reconcile schedule"); err != nil {
				j.o.Log.Warn("reconciliation not started", "source", s.Name, "error", err.Error())
			}
		}
	}
}

// Reconciliation sums each scheduled source's runs of the last 24 hours.
func (j *Jobs) Reconciliation() []*adminv1.SourceReconciliation {
	by := map[string]*adminv1.SourceReconciliation{}
	for _, s := range j.o.Pipeline().Sources {
		if s.API != nil && s.API.Reconcile != nil {
			by[s.Name] = &adminv1.SourceReconciliation{Source: s.Name}
		}
	}
	cut := time.Now().Add(-24 * time.Hour)
	j.mu.Lock()
	for _, job := range j.jobs {
		r := by[job.Request.GetSource()]
		if r == nil || job.Kind != adminv1.BackfillKind_BACKFILL_KIND_RECONCILE || job.StartedAt.AsTime().Before(cut) {
			continue
		}
		r.Checked_24H += job.Produced + job.AlreadySeen
		r.Found_24H += job.Produced
		if r.LastRunAt == nil || job.StartedAt.AsTime().After(r.LastRunAt.AsTime()) {
			r.LastRunAt, r.LastError = job.StartedAt, job.Error
		}
	}
	j.mu.Unlock()
	out := make([]*adminv1.SourceReconciliation, 0, len(by))
	for _, r := range by {
		out = append(out, r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Source < out[b].Source })
	return out
}

// Stop ends the running jobs, leaving them RUNNING on the topic with their
// cursors (the next start resumes them).
func (j *Jobs) Stop() {
	j.stopping.Store(true)
	j.mu.Lock()
	for _, c := range j.cancels {
		c()
	}
	j.mu.Unlock()
	j.wg.Wait()
}
