// Package lifecycle runs a service process: a signal-aware context, the
// service's parts in one errgroup (the first failure stops all), and an
// ordered graceful shutdown in which every step has its own deadline.
//
// A service's main is three lines:
//
//	func main() { lifecycle.Main("normalizer", run) }
//
// and run builds the service, registers its parts with a Group and returns
// Group.Wait().
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// Main builds a context cancelled by SIGINT or SIGTERM, calls run and exits
// the process: 0 when run returns nil or context.Canceled, 1 otherwise. It is
// the only place a closedloop service exits.
func Main(service string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("service failed", "error", err.Error())
		os.Exit(1)
	}
	slog.Info("service stopped")
}

// Step is one shutdown action. Steps run in the order they were added, each
// with its own Timeout (default 5 s); a step that fails or times out is logged
// and the next one still runs.
type Step struct {
	Name    string
	Timeout time.Duration
	Fn      func(ctx context.Context) error
}

// Group runs the long-lived parts of a service (servers, consumer loops) and,
// once the first of them returns or the parent context ends, runs the shutdown
// steps in order.
type Group struct {
	log   *slog.Logger
	eg    *errgroup.Group
	ctx   context.Context
	mu    sync.Mutex
	steps []Step
}

// NewGroup returns a Group whose parts see a context that is cancelled when
// parent is cancelled or any part returns.
func NewGroup(parent context.Context, log *slog.Logger) *Group {
	eg, ctx := errgroup.WithContext(parent)
	return &Group{log: log, eg: eg, ctx: ctx}
}

// Context is the context the parts run under.
func (g *Group) Context() context.Context { return g.ctx }

// Go starts a part. A part must return when Context() is done; returning
// earlier (with or without an error) stops the whole service.
func (g *Group) Go(name string, fn func(ctx context.Context) error) {
	g.eg.Go(func() error {
		err := fn(g.ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("%s: %w", name, err)
		}
		if g.ctx.Err() == nil {
			return fmt.Errorf("%s stopped unexpectedly", name)
		}
		return nil
	})
}

// OnShutdown adds a step to run after the parts have been told to stop, in
// the order added: stop accepting, finish in-flight work, flush producers,
// commit offsets, flush telemetry last.
func (g *Group) OnShutdown(name string, timeout time.Duration, fn func(ctx context.Context) error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.steps = append(g.steps, Step{Name: name, Timeout: timeout, Fn: fn})
}

// Wait blocks until the group's context is done, runs the shutdown steps in
// order and returns the first part's error, if any.
func (g *Group) Wait() error {
	<-g.ctx.Done()
	g.mu.Lock()
	steps := append([]Step(nil), g.steps...)
	g.mu.Unlock()
	for _, s := range steps {
		g.runStep(s)
	}
	err := g.eg.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (g *Group) runStep(s Step) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.Fn(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			g.log.Warn("shutdown step failed", "step", s.Name, "error", err.Error())
			return
		}
		g.log.Debug("shutdown step done", "step", s.Name, "took", time.Since(start).String())
	case <-ctx.Done():
		g.log.Warn("shutdown step timed out", "step", s.Name, "timeout", timeout.String())
	}
}
