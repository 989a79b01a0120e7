// Package audit is the audit trail of every mutating call on any gRPC port:
// one JSON record per phase on the audit topic (closedloop.audit.v1), keyed
// by who made the call. A mutation is recorded as "requested" before it runs
// — if that record cannot be written the call is refused and nothing
// changes — and as "completed" with its result after.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/closedloop/closedloop/libs/kafkaio"
)

// Phases of a mutation.
const (
	Requested = "requested"
	Completed = "completed"
)

// Entry is one record on the audit topic.
type Entry struct {
	At time.Time `json:"at"`
	// Who made the call: the admin token's name, or for a call between
	// services the caller the admin acted for.
	Who  string `json:"who"`
	Role string `json:"role,omitempty"`
	// Service and Instance are where the call was served.
	Service  string `json:"service,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Via is the calling service, when the call came from one (the admin).
	Via     string          `json:"via,omitempty"`
	Method  string          `json:"method"`
	Request json.RawMessage `json:"request,omitempty"`
	Phase   string          `json:"phase"`
	// Result is the gRPC code of a completed call.
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Producer is the part of kafkaio.Producer the writer needs.
type Producer interface {
	Produce(ctx context.Context, recs ...kafkaio.Record) error
}

// ErrUnavailable is returned when the audit record could not be written:
// the caller must refuse the mutation.
var ErrUnavailable = errors.New("the audit trail is unavailable")

// Writer writes entries to the audit topic and the log.
type Writer struct {
	Producer Producer
	Topic    string
	Log      *slog.Logger
	// Timeout bounds one write (default 5s).
	Timeout time.Duration
}

// Write records e. Requests carry no secrets (tokens are only ever in
// responses, which are not recorded).
func (w *Writer) Write(ctx context.Context, e Entry) error {
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	w.Log.InfoContext(ctx, "audit", "who", e.Who, "role", e.Role, "via", e.Via, "method", e.Method, "phase", e.Phase,
		"request", string(e.Request), "result", e.Result, "error", e.Error)
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := w.Producer.Produce(wctx, kafkaio.Record{Topic: w.Topic, Key: []byte(e.Who), Value: b}); err != nil {
		w.Log.ErrorContext(ctx, "audit record not written", "method", e.Method, "phase", e.Phase, "error", err.Error())
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}
