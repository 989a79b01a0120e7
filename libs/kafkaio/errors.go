package kafkaio

import (
	"errors"
	"fmt"
)

// PermanentError marks a record that can never be handled (malformed,
// missing ids, out of range): retrying cannot help, so the consumer sends it
// to the quarantine topic and moves on.
type PermanentError struct {
	// Reason is a short machine-readable code, e.g. "malformed_json".
	Reason string
	Err    error
}

func (e *PermanentError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError with a reason code.
func Permanent(reason string, err error) error {
	if err == nil {
		err = errors.New(reason)
	}
	return &PermanentError{Reason: reason, Err: err}
}

// Permanentf is Permanent with a formatted error.
func Permanentf(reason, format string, args ...any) error {
	return Permanent(reason, fmt.Errorf(format, args...))
}

// IsPermanent reports whether err (or one it wraps) is a PermanentError and
// returns its reason.
func IsPermanent(err error) (string, bool) {
	var p *PermanentError
	if errors.As(err, &p) {
		return p.Reason, true
	}
	return "", false
}
