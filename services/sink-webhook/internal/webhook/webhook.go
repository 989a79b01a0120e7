// Package webhook is sink-webhook's destination: one endpoint that receives
// each event as a JSON POST signed per Standard Webhooks
// (https://www.standardwebhooks.com): webhook-id is the event id (receivers
// dedupe on it), webhook-timestamp the unix time of the attempt,
// webhook-signature "v1,<base64 HMAC-SHA256 of id.timestamp.body>".
//
// Only 2xx counts as delivered. 410 Gone disables the endpoint: that event
// and every later one are dead-lettered at once (permanent), and the flag is
// kept in Redis so a restart does not hammer a receiver that said it is gone;
// an operator re-enables it (docs/runbooks.md).
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/closedloop/closedloop/libs/pbjson"
	"github.com/closedloop/closedloop/libs/sink"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Flag remembers that an endpoint is disabled (Redis in the service).
type Flag interface {
	Disabled(ctx context.Context) (string, bool, error)
	Disable(ctx context.Context, why string) error
	Enable(ctx context.Context) error
}

// Endpoint delivers to one URL.
type Endpoint struct {
	Name   string
	URL    string
	key    []byte
	client *http.Client
	flag   Flag
	now    func() time.Time
	off    atomic.Pointer[string] // why it is disabled, nil when enabled
}

// SigningKey turns a configured secret into the HMAC key: a "whsec_"
// secret is base64 after the prefix; any other secret is used as is.
func SigningKey(secret []byte) ([]byte, error) {
	s := string(secret)
	if rest, ok := strings.CutPrefix(s, "whsec_"); ok {
		k, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return nil, fmt.Errorf("a whsec_ secret must be base64 after the prefix: %w", err)
		}
		return k, nil
	}
	return secret, nil
}

// New returns an endpoint; flag may be nil (no persistence of 410).
func New(ctx context.Context, name, url string, secret []byte, timeout time.Duration, flag Flag) (*Endpoint, error) {
	key, err := SigningKey(secret)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", name, err)
	}
	e := &Endpoint{Name: name, URL: url, key: key, flag: flag, now: time.Now,
		client: &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4 * Parallel, IdleConnTimeout: 90 * time.Second}}}
	if flag != nil {
		why, off, err := flag.Disabled(ctx)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: reading its disabled flag: %w", name, err)
		}
		if off {
			e.off.Store(&why)
		}
	}
	return e, nil
}

// Disabled reports whether a 410 disabled the endpoint, and why.
func (e *Endpoint) Disabled() (string, bool) {
	if p := e.off.Load(); p != nil {
		return *p, true
	}
	return "", false
}

// Enable re-enables a disabled endpoint (an operator's ResumeDestination).
func (e *Endpoint) Enable(ctx context.Context) error {
	if e.flag != nil {
		if err := e.flag.Enable(ctx); err != nil {
			return err
		}
	}
	e.off.Store(nil)
	return nil
}

// Sign returns the webhook-signature header value for a message.
func Sign(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Parallel is how many subjects an endpoint delivers to at once within a
// batch (each subject's events stay in order).
const Parallel = 16

// Deliver implements sink.Destination: one POST per event. Events of
// different subjects go in parallel (up to Parallel at once, connections
// reused); the events of one subject go in order, and after one fails
// retryably the later ones of that subject are held back (retryable too), so
// a receiver never gets a subject's versions out of order.
func (e *Endpoint) Deliver(ctx context.Context, events []*sink.Event) []error {
	bySubject := map[string][]int{}
	var order []string
	for i, ev := range events {
		subject := ev.Feedback.GetSubject().GetType().String() + "/" + ev.Feedback.GetSubject().GetId()
		if ev.Feedback.GetSubject().GetId() == "" {
			subject = "event/" + ev.Feedback.EventId // no subject: nothing to keep in order
		}
		if _, ok := bySubject[subject]; !ok {
			order = append(order, subject)
		}
		bySubject[subject] = append(bySubject[subject], i)
	}
	errs := make([]error, len(events))
	var failed atomic.Bool
	var wg sync.WaitGroup
	slots := make(chan struct{}, Parallel)
	for _, subject := range order {
		slots <- struct{}{}
		wg.Add(1)
		go func(idx []int) {
			defer func() { <-slots; wg.Done() }()
			for k, i := range idx {
				ev := events[i]
				err := e.post(ev)
				if err == nil {
					// Recorded the moment its 2xx arrives: a crash in the middle
					// of a batch re-sends at most the events in flight, not every
					// event of the batch already acknowledged (a failed record is
					// made, and reported, when the batch is done).
					_ = ev.MarkDelivered(ctx)
					continue
				}
				errs[i] = err
				failed.Store(true)
				if class, _, _ := sink.Classify(err); class == sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE {
					for _, j := range idx[k+1:] {
						errs[j] = sink.Retryable(fmt.Errorf("held behind an earlier event of subject %s that failed", subject), 0)
					}
					return
				}
			}
		}(bySubject[subject])
	}
	wg.Wait()
	if !failed.Load() {
		return nil
	}
	return errs
}

func (e *Endpoint) post(ev *sink.Event) error {
	if why, off := e.Disabled(); off {
		return sink.Permanent(fmt.Errorf("endpoint %s is disabled: %s", e.Name, why))
	}
	body, err := pbjson.Marshal(ev.Feedback)
	if err != nil {
		return sink.Permanent(fmt.Errorf("event %s cannot be encoded as JSON: %w", ev.Feedback.EventId, err))
	}
	ts := e.now().Unix()
	req, err := http.NewRequestWithContext(ev.Ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return sink.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "closedloop-sink-webhook/1")
	req.Header.Set("webhook-id", ev.Feedback.EventId)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Sign(e.key, ev.Feedback.EventId, ts, body))
	resp, err := e.client.Do(req)
	if err != nil {
		return sink.Retryable(fmt.Errorf("POST %s: %w", e.Name, err), 0)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusGone {
		why := fmt.Sprintf("410 Gone at %s", e.now().UTC().Format(time.RFC3339))
		e.off.Store(&why)
		if e.flag != nil {
			if ferr := e.flag.Disable(context.WithoutCancel(ev.Ctx), why); ferr != nil {
				return errors.Join(sink.HTTPStatus(resp.StatusCode, resp.Header, snippet), ferr)
			}
		}
	}
	return sink.HTTPStatus(resp.StatusCode, resp.Header, snippet)
}
