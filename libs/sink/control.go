package sink

import (
	"context"

	"github.com/closedloop/closedloop/libs/retry"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// Breaker is the runner's circuit breaker (for status, Pause and Resume).
func (r *Runner) Breaker() *retry.Breaker { return r.cfg.Breaker }

// Pause stops deliveries by hand: every partition worker waits before its
// next delivery, so consumption stops and Kafka holds the backlog.
func (r *Runner) Pause(reason string) {
	r.pauseReason.Store(&reason)
	r.cfg.Breaker.Pause()
	r.cfg.Log.Warn("destination paused", "sink", r.cfg.Sink, "destination", r.Name(), "reason", reason)
}

// Resume undoes Pause, and re-enables a destination that disabled itself
// (a webhook endpoint that answered 410, an archived Slack channel).
func (r *Runner) Resume() {
	r.cfg.Breaker.Resume()
	r.pauseReason.Store(nil)
	if e, ok := r.dest.(Enabler); ok {
		if why, off := e.Disabled(); off {
			if err := e.Enable(context.Background()); err != nil {
				r.cfg.Log.Error("re-enabling the destination failed", "sink", r.cfg.Sink, "destination", r.Name(), "error", err.Error())
			} else {
				r.cfg.Log.Info("destination re-enabled", "sink", r.cfg.Sink, "destination", r.Name(), "was", why)
			}
		}
	}
	r.cfg.Log.Info("destination resumed", "sink", r.cfg.Sink, "destination", r.Name())
}

// Enabler is a Disabler an operator re-enables (ResumeDestination).
type Enabler interface {
	Disabler
	Enable(ctx context.Context) error
}

// Disabler is implemented by destinations that can refuse for good (a
// webhook endpoint that answered 410 Gone).
type Disabler interface {
	Disabled() (why string, disabled bool)
}

// Status is the destination's state for the admin API.
func (r *Runner) Status() *adminv1.DestinationStatus {
	st := &adminv1.DestinationStatus{
		Name: r.Name(), Sink: r.cfg.Sink, Paused: r.cfg.Breaker.Paused(),
		BreakerOpened: int64(r.cfg.Breaker.Opened()), Delivered: r.nDelivered.Load(),
		FailedAttempts: r.nFailed.Load(), DeadLettered: r.nDead.Load(), DlqTopic: r.cfg.DLQTopic,
	}
	switch r.cfg.Breaker.State() {
	case retry.Closed:
		st.Breaker = adminv1.BreakerState_BREAKER_STATE_CLOSED
	case retry.Open:
		st.Breaker = adminv1.BreakerState_BREAKER_STATE_OPEN
	case retry.HalfOpen:
		st.Breaker = adminv1.BreakerState_BREAKER_STATE_HALF_OPEN
	}
	if why := r.pauseReason.Load(); why != nil && st.Paused {
		st.PauseReason = *why
	}
	if d, ok := r.dest.(Disabler); ok {
		st.DisabledReason, st.Disabled = d.Disabled()
	}
	return st
}
