package lifecycle

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestShutdownStepsRunInOrderAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g := NewGroup(ctx, discard())
	var order []string
	g.Go("loop", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	g.OnShutdown("first", time.Second, func(context.Context) error { order = append(order, "first"); return nil })
	g.OnShutdown("second", time.Second, func(context.Context) error { order = append(order, "second"); return nil })
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil after a clean cancel", err)
	}
	if len(order) != 2 || order[0] != "first" || order[1] != "second" {
		t.Fatalf("steps ran as %v, want [first second]", order)
	}
}

func TestAFailingPartStopsTheOthersAndIsReturned(t *testing.T) {
	g := NewGroup(context.Background(), discard())
	boom := errors.New("boom")
	g.Go("bad", func(context.Context) error { return boom })
	stopped := make(chan struct{})
	g.Go("good", func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil })
	err := g.Wait()
	if !errors.Is(err, boom) {
		t.Fatalf("Wait() = %v, want the failing part's error", err)
	}
	<-stopped
}

func TestAPartThatReturnsEarlyWithoutErrorStillStopsTheService(t *testing.T) {
	g := NewGroup(context.Background(), discard())
	g.Go("quitter", func(context.Context) error { return nil })
	if err := g.Wait(); err == nil {
		t.Fatal("Wait() = nil, want an error naming the part that stopped")
	}
}

func TestAStuckStepTimesOutAndLaterStepsStillRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g := NewGroup(ctx, discard())
	ran := false
	g.OnShutdown("stuck", 20*time.Millisecond, func(ctx context.Context) error { select {} })
	g.OnShutdown("after", time.Second, func(context.Context) error { ran = true; return nil })
	cancel()
	_ = g.Wait()
	if !ran {
		t.Fatal("the step after a stuck one did not run")
	}
}
