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

// ErrRecordTooLarge matches (errors.Is) every RecordTooLargeError.
var ErrRecordTooLarge = errors.New("record too large for its topic")

// RecordTooLargeError is a record that cannot be written because it is larger
// than its topic accepts. It is always returned wrapped in a PermanentError
// (reason ReasonRecordTooLarge): retrying the same record cannot succeed, so a
// consumer quarantines it and its partition moves on.
type RecordTooLargeError struct {
	Topic string
	// Size is the record's encoded size as the broker measures it (a batch
	// of one record); Limit the topic's limit, 0 when only the broker knew it.
	Size, Limit int
}

func (e *RecordTooLargeError) Error() string {
	if e.Limit > 0 {
		return fmt.Sprintf("record of %d bytes does not fit in topic %s (max.message.bytes %d)", e.Size, e.Topic, e.Limit)
	}
	return fmt.Sprintf("record of %d bytes refused by the broker as too large for topic %s (MESSAGE_TOO_LARGE)", e.Size, e.Topic)
}

// Is makes errors.Is(err, ErrRecordTooLarge) true.
func (e *RecordTooLargeError) Is(target error) bool { return target == ErrRecordTooLarge }

func tooLarge(topic string, size, limit int) error {
	return &PermanentError{Reason: ReasonRecordTooLarge, Err: &RecordTooLargeError{Topic: topic, Size: size, Limit: limit}}
}
