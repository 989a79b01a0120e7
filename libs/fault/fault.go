// Package fault types errors where they are made, by what the caller can do
// about them, and maps those kinds to transport codes in one place: gRPC
// codes (GRPCStatus, applied to every service's port by grpcserver) and HTTP
// statuses (HTTPStatus). Nothing classifies an error by its message.
//
//	return fault.Errorf(fault.Invalid, "dead letter id %q is not <sink>/<partition>/<offset>", id)
//	return fault.Wrap(fault.Unavailable, fmt.Errorf("reading %s: %w", topic, err))
package fault

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind is what a caller can do about an error.
type Kind uint8

// Kinds.
const (
	// Internal: a bug or an unexpected state; nothing the caller can fix.
	Internal Kind = iota
	// Invalid: the request is wrong; sending it again will not help.
	Invalid
	// NotFound: what the request names does not exist.
	NotFound
	// Conflict: the request is valid but the current state forbids it
	// (too many tokens, a job already running).
	Conflict
	// Unavailable: a backend (Kafka, Redis, a service instance) failed or
	// is unreachable; the same request may succeed later.
	Unavailable
	// Unauthenticated: no or unknown credentials.
	Unauthenticated
	// Denied: known credentials without the right.
	Denied
	// TooLarge: the input exceeds a limit.
	TooLarge
	// RateLimited: a limit on how often; later is fine.
	RateLimited
	// Partial: done in part, and what was not done could not be recorded.
	Partial
)

// codes is the one table from kinds to transport codes.
var table = map[Kind]struct {
	grpc codes.Code
	http int
	name string
}{
	Internal:        {codes.Internal, http.StatusInternalServerError, "internal"},
	Invalid:         {codes.InvalidArgument, http.StatusBadRequest, "invalid"},
	NotFound:        {codes.NotFound, http.StatusNotFound, "not_found"},
	Conflict:        {codes.FailedPrecondition, http.StatusConflict, "conflict"},
	Unavailable:     {codes.Unavailable, http.StatusServiceUnavailable, "unavailable"},
	Unauthenticated: {codes.Unauthenticated, http.StatusUnauthorized, "unauthenticated"},
	Denied:          {codes.PermissionDenied, http.StatusForbidden, "denied"},
	TooLarge:        {codes.InvalidArgument, http.StatusRequestEntityTooLarge, "too_large"},
	RateLimited:     {codes.ResourceExhausted, http.StatusTooManyRequests, "rate_limited"},
	Partial:         {codes.DataLoss, http.StatusInternalServerError, "partial"},
}

func (k Kind) String() string { return table[k].name }

// Error is an error of a kind.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// GRPCStatus makes a fault error a gRPC status wherever it is returned
// (status.FromError and status.Code use it).
func (e *Error) GRPCStatus() *status.Status { return status.New(table[e.Kind].grpc, e.Err.Error()) }

// Errorf is fmt.Errorf of kind k (%w wraps as usual).
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// Wrap gives err the kind k (nil stays nil). An error already of a kind is
// wrapped again: the outermost kind is the one that counts.
func Wrap(k Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Err: err}
}

// KindOf is the kind of err: the outermost fault in its chain, else a gRPC
// status's code read back (an error from another service), else Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if st, ok := status.FromError(err); ok && err != nil {
		for k, v := range table {
			if v.grpc == st.Code() && k != TooLarge {
				return k
			}
		}
	}
	return Internal
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// GRPC is err as a gRPC status error: a status error unchanged, a fault of
// its kind's code, anything else Internal (a context ending is passed as
// Canceled or DeadlineExceeded).
func GRPC(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return status.Error(table[e.Kind].grpc, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if c := status.FromContextError(err).Code(); c == codes.Canceled || c == codes.DeadlineExceeded {
		return status.Error(c, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// HTTPStatus is err's HTTP status.
func HTTPStatus(err error) int { return table[KindOf(err)].http }
