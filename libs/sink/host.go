package sink

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/service"
)

// Instance is one destination a sink service runs: its own consumer group,
// checkpoint, breaker and runner, so a dead destination never slows another.
type Instance struct {
	// Name identifies the destination in the service ("warehouse", a
	// webhook endpoint's name): status, pause/resume, dead letters, metrics.
	Name string
	// Group is its consumer group.
	Group string
	// Open connects to the destination. The host calls it in the
	// background and again, with backoff, until it succeeds: the service
	// starts, serves health, status and pause at once, reports not ready with
	// Open's error meanwhile, and delivers once the destination is there.
	Open func(ctx context.Context) (Destination, error)
	// Close, when set, releases what Open made, after consumption stopped.
	Close func()
	// Checkpoint (default Idempotent), Filter (default: every event) and
	// MaxBatch (default Settings.MaxBatch).
	Checkpoint Checkpoint
	Filter     Matcher
	MaxBatch   int
}

// Host wires destinations into a started service: the topics (lanes, the
// service's replay and dead-letter topics), one producer for quarantine and
// dead letters, and per instance its runner, consumer group, status and
// pause/resume. It is the one place this wiring lives; a sink service's Run
// is its configuration and a Host call.
func Host(ctx context.Context, svc *service.Service, settings Settings, instances []Instance) error {
	t := svc.Common.Topics
	dlq, replay := t.DLQ(svc.Name), t.Replay(svc.Name)
	if err := svc.EnsureTopics(ctx, t.Enriched, t.Priority, t.Quarantine, dlq, replay); err != nil {
		return err
	}
	producer := svc.Producer() // quarantine and dead letters
	// One consumer per destination: they share the service's record budget.
	svc.Consumers = len(instances)
	for _, in := range instances {
		o := &opening{name: in.Name, open: in.Open, ready: make(chan struct{}), log: svc.Log}
		rcfg := Config{Sink: svc.Name, Destination: in.Name, DLQTopic: dlq, DLQ: producer, Log: svc.Log,
			Checkpoint: in.Checkpoint, Filter: in.Filter, PriorityTopic: t.Priority, Ready: o.wait}
		settings.Apply(&rcfg)
		if in.Name == "" || in.Name == trimSink(svc.Name) {
			rcfg.Destination = "" // the service's one destination ("warehouse")
		}
		runner, err := New(rcfg, o)
		if err != nil {
			return err
		}
		svc.Status.AddDestination(runner)
		svc.Status.AddCheck("destination "+runner.Name(), o.check)
		svc.Group.Go("open "+runner.Name(), o.run)
		batch := in.MaxBatch
		if batch <= 0 {
			batch = settings.MaxBatch
		}
		if err := svc.ConsumeBatch(in.Group, []string{t.Priority, t.Enriched, replay}, producer, batch, runner.HandleBatch, service.GatherTopics); err != nil {
			return err
		}
		if in.Close != nil {
			svc.OnShutdown("close "+runner.Name(), 2*time.Second, func(context.Context) error { o.close(in.Close); return nil })
		}
	}
	svc.CloseProducer(producer)
	return nil
}

func trimSink(service string) string {
	if len(service) > 5 && service[:5] == "sink-" {
		return service[5:]
	}
	return service
}

// opening is a Destination being connected in the background. The runner
// waits for it (Config.Ready) before each batch, like a paused destination:
// consumption holds, Kafka keeps the backlog, nothing is dead-lettered.
type opening struct {
	name  string
	open  func(ctx context.Context) (Destination, error)
	ready chan struct{}
	log   *slog.Logger

	mu   sync.Mutex
	dest Destination
	err  error
}

func (o *opening) run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		d, err := o.open(ctx)
		if err == nil {
			o.mu.Lock()
			o.dest, o.err = d, nil
			o.mu.Unlock()
			close(o.ready)
			if attempt > 1 {
				o.log.Info("destination connected", "destination", o.name, "attempts", attempt)
			}
			<-ctx.Done() // a task of the service's group runs until shutdown
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		o.mu.Lock()
		o.err = err
		o.mu.Unlock()
		wait := retry.Backoff(attempt, 500*time.Millisecond, 10*time.Second)
		if attempt == 1 || attempt%10 == 0 {
			o.log.Warn("destination not reachable; the service runs and retries", "destination", o.name, "attempt", attempt,
				"error", err.Error(), "retry_in", wait.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// wait blocks until the destination is open (or ctx ends).
func (o *opening) wait(ctx context.Context) error {
	select {
	case <-o.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// check is the readiness check: not ready, with the reason, until open.
func (o *opening) check(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dest != nil {
		return nil
	}
	if o.err != nil {
		return fmt.Errorf("not connected: %w", o.err)
	}
	return fmt.Errorf("connecting")
}

func (o *opening) get() Destination {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dest
}

// Deliver implements Destination; the runner calls it only once open.
func (o *opening) Deliver(ctx context.Context, events []*Event) []error {
	return o.get().Deliver(ctx, events)
}

// Disabled forwards to a destination that can disable itself.
func (o *opening) Disabled() (string, bool) {
	if d, ok := o.get().(Disabler); ok {
		return d.Disabled()
	}
	return "", false
}

// Enable forwards to a destination an operator re-enables.
func (o *opening) Enable(ctx context.Context) error {
	if d, ok := o.get().(Enabler); ok {
		return d.Enable(ctx)
	}
	return nil
}

func (o *opening) close(fn func()) {
	select {
	case <-o.ready:
		fn()
	default:
	}
}
