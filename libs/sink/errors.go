package sink

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/closedloop/closedloop/libs/retry"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Error is a classified delivery failure. Destinations return it (through
// Retryable, Permanent or HTTPStatus); any other error is classified by
// Classify.
type Error struct {
	Class sinkv1.ErrorClass
	// RetryAfter is the destination's own wait (Retry-After), if it gave one.
	RetryAfter time.Duration
	// StatusCode is the HTTP status, for destinations that speak HTTP.
	StatusCode int
	Err        error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Retryable marks err as worth retrying; after is the destination's
// Retry-After (0: none).
func Retryable(err error, after time.Duration) error {
	return &Error{Class: sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE, RetryAfter: after, Err: err}
}

// Permanent marks err as final: the event is dead-lettered at once.
func Permanent(err error) error {
	return &Error{Class: sinkv1.ErrorClass_ERROR_CLASS_PERMANENT, Err: err}
}

// HTTPStatus classifies an HTTP answer: nil for 2xx; 408, 425, 429 and 5xx
// retryable (honouring Retry-After in seconds or as an HTTP date); any other
// status permanent. body is quoted (shortened) in the error.
func HTTPStatus(status int, header http.Header, body []byte) error {
	if status >= 200 && status < 300 {
		return nil
	}
	if len(body) > 256 {
		body = body[:256]
	}
	err := fmt.Errorf("HTTP %d %s: %q", status, http.StatusText(status), body)
	e := &Error{Class: sinkv1.ErrorClass_ERROR_CLASS_PERMANENT, StatusCode: status, Err: err}
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests, status >= 500:
		e.Class = sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE
		e.RetryAfter = retry.After(header.Get("Retry-After"), time.Now(), 0)
	}
	return e
}

// Classify returns the class of a delivery error: an *Error's own class;
// anything else — timeouts, network and connection errors, and errors the
// destination did not classify — is retryable, so nothing is dead-lettered
// on a guess (the retry budget still ends it).
func Classify(err error) (class sinkv1.ErrorClass, retryAfter time.Duration, status int) {
	var e *Error
	if errors.As(err, &e) {
		return e.Class, e.RetryAfter, e.StatusCode
	}
	return sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE, 0, 0
}
