// Package freshdesk is the Freshdesk destination: a ticket for each
// response its rule selects (by default every detractor), one ticket per
// response however often it is delivered or updated.
//
// Freshdesk has no idempotency key and no external id, so the response's
// key (<source>/<subject type>/<subject id>) is kept in a custom ticket
// field (`response_field`, default cf_closedloop_response; the account must
// define it), and before creating a ticket the destination finds the
// response's ticket: its own record in Redis; else, if a creation was
// attempted (the attempt's time is recorded in Redis before the POST), the
// requester's tickets updated since the attempt (GET /api/v2/tickets?email=
// &updated_since=, from the database, not the search index that lags by
// minutes) whose field holds the key. A crash between the POST and the
// record therefore never makes a second ticket, and a response never
// attempted costs no search. Records and attempts are kept 90 days and
// rely on Redis's persistence, as the dedupe does. A ticket's tags carry a
// marker of every event version it holds (closedloop_ev_<hash>): a version
// it holds is done; a later version (a comment added, a score changed) is a
// private note (POST /api/v2/tickets/{id}/notes), then its marker is added
// — a crash between the two repeats the note, never loses it.
//
// The account's limit (requests per minute) is enforced across replicas in
// Redis; 429 waits for Retry-After on every replica; 5xx and timeouts are
// retried; 400 (validation, with Freshdesk's field errors), 404 and other
// 4xx are permanent for the event; 401 and 403 disable the destination with
// the reason and hold its events until the API key is replaced (a restart
// with another key clears the flag) or an operator resumes it.
package freshdesk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/destinations/helpdesk"
	"github.com/closedloop/closedloop/libs/expr"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Config is the `sinks.freshdesk` section of the pipeline file.
type Config struct {
	Accounts []Account `yaml:"accounts"`
}

// Account is one Freshdesk destination: the fields every helpdesk has
// (helpdesk.Base) and Freshdesk's.
type Account struct {
	helpdesk.Base `yaml:",inline"`
	// APIKey is a secret reference to an agent's API key.
	APIKey string `yaml:"api_key"`
	// Description is the template of the ticket's description, sent as
	// HTML (the text escaped, lines kept).
	Description string `yaml:"description"`
	// Status of a new ticket: 2 open (default), 3 pending; Source: 2 portal
	// (default), 1 email, 3 phone, 7 chat, 9 feedback widget, 10 outbound email.
	Status int `yaml:"status"`
	Source int `yaml:"source"`
	// ResponseField is the custom field holding the response's key
	// (default cf_closedloop_response; create it in Admin → Ticket Fields).
	ResponseField string `yaml:"response_field"`
}

var (
	fieldRE    = regexp.MustCompile(`^cf_[a-z0-9_]{1,60}$`)
	priorities = map[string]int{"low": 1, "normal": 2, "high": 3, "urgent": 4}
)

// Kind registers Freshdesk with a hosting service.
var Kind = sink.Kind{Name: "freshdesk", Instances: instances}

func instances(section *yaml.Node, env sink.KindEnv) ([]sink.Instance, error) {
	return helpdesk.Instances(section, env, func(a Account, env sink.KindEnv) (helpdesk.Opened, error) { return newAccount(a, env) })
}

// Rule is the rule choosing the responses that get a ticket.
func (d *Destination) Rule() *expr.Bool { return d.rules.When }

// Destination opens and notes the tickets of one account.
type Destination struct {
	*helpdesk.Flag
	cfg       Account
	api       string
	client    helpdesk.Client
	rdb       redis.UniversalClient
	ticketKey string
	rules     *helpdesk.Rules
	now       func() time.Time
}

func newAccount(a Account, env sink.KindEnv) (*Destination, error) {
	d := &Destination{rdb: env.Redis, ticketKey: env.RedisPrefix + a.Name + ":ticket:", now: time.Now}
	d.api = strings.TrimRight(a.URL, "/") + "/api/v2"
	if a.APIKey == "" {
		return nil, errors.New("api_key: a secret reference to an agent's API key")
	}
	s, err := config.ResolveSecret(a.APIKey, env.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("api_key: %w", err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	req.SetBasicAuth(string(s.Reveal()), "X") // the key as the user, X as the password
	auth := req.Header.Get("Authorization")
	d.Flag = &helpdesk.Flag{RDB: env.Redis, Key: env.RedisPrefix + a.Name + ":disabled", Fingerprint: helpdesk.Fingerprint(auth)}
	if d.rules, err = helpdesk.CompileRules(a.When, a.Priorities, a.Subject, a.Description, helpdesk.DefaultSubject, helpdesk.DefaultBody); err != nil {
		return nil, err
	}
	if a.ResponseField == "" {
		a.ResponseField = "cf_closedloop_response"
	}
	if !fieldRE.MatchString(a.ResponseField) {
		return nil, fmt.Errorf("response_field %q: a custom field's name, cf_<name>", a.ResponseField)
	}
	if a.Status == 0 {
		a.Status = 2
	}
	if a.Source == 0 {
		a.Source = 2
	}
	if a.Status < 2 || a.Status > 5 {
		return nil, errors.New("status: 2 open, 3 pending, 4 resolved or 5 closed")
	}
	a.Defaults()
	d.cfg = a
	if d.client, err = helpdesk.NewClient("freshdesk "+a.Name, auth, a.URL, a.RequestsPerMinute, a.Timeout.Duration, env); err != nil {
		return nil, err
	}
	return d, nil
}

// Deliver implements sink.Destination.
func (d *Destination) Deliver(_ context.Context, events []*sink.Event) []error {
	return helpdesk.DeliverInOrder(events, d.Flag, "freshdesk "+d.cfg.Name, func(ev *sink.Event) error { return d.deliver(ev.Ctx, ev.Feedback) })
}

type ticket struct {
	ID           int64          `json:"id"`
	Tags         []string       `json:"tags"`
	CustomFields map[string]any `json:"custom_fields"`
}

func (d *Destination) deliver(ctx context.Context, f *feedbackv1.FeedbackEvent) error {
	ext := helpdesk.ExternalID(f)
	marker := helpdesk.Marker(f.EventId)
	email, _, err := d.cfg.Requester("freshdesk", f)
	if err != nil {
		return err
	}
	t, err := d.find(ctx, ext, email)
	if err != nil {
		return err
	}
	if t == nil {
		return d.create(ctx, f, ext, marker, email)
	}
	_ = d.rdb.Set(context.WithoutCancel(ctx), d.ticketKey+ext, t.ID, 90*24*time.Hour).Err()
	for _, tag := range t.Tags {
		if tag == marker {
			return nil // this version is on the ticket already
		}
	}
	return d.note(ctx, f, t, marker)
}

// call is one API call; a non-2xx answer is classified.
func (d *Destination) call(ctx context.Context, method, target string, in, out any) (int, http.Header, error) {
	a, err := d.client.Do(ctx, method, target, nil, in, out)
	if err != nil || a == nil {
		return http.StatusOK, nil, err
	}
	return a.Status, a.Header, d.classify(ctx, method, a)
}

// find returns the response's ticket: the one recorded in Redis; else, when
// a creation was attempted (its time recorded before the POST) and may have
// succeeded without being recorded (a crash between the two), the newest of
// the requester's tickets updated since then whose response field holds the
// key; else none — a response never attempted has no ticket, and the
// requester's whole history is not read for every new ticket.
func (d *Destination) find(ctx context.Context, ext, email string) (*ticket, error) {
	if id, err := d.rdb.Get(ctx, d.ticketKey+ext).Int64(); err == nil && id > 0 {
		var t ticket
		status, _, err := d.call(ctx, http.MethodGet, d.api+"/tickets/"+strconv.FormatInt(id, 10), nil, &t)
		if err == nil {
			return &t, nil
		}
		if status != http.StatusNotFound {
			return nil, err
		}
	} else if err != nil && !errors.Is(err, redis.Nil) {
		return nil, sink.Retryable(fmt.Errorf("redis: the ticket record of %s: %w", ext, err), 0)
	}
	attempted, err := d.rdb.Get(ctx, d.ticketKey+ext+attemptSuffix).Int64()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, nil
	case err != nil:
		return nil, sink.Retryable(fmt.Errorf("redis: the creation attempt of %s: %w", ext, err), 0)
	}
	since := time.Unix(attempted, 0).Add(-10 * time.Minute).UTC().Format(time.RFC3339) // clocks differ
	q := url.Values{"email": {email}, "per_page": {"100"}, "updated_since": {since}}
	next := d.api + "/tickets?" + q.Encode()
	var found *ticket
	for page := 0; next != ""; page++ {
		if page == maxScanPages {
			return nil, sink.Permanent(fmt.Errorf("%s has more than %d tickets updated since %s: cannot tell whether the response %s has one", email, 100*maxScanPages, since, ext))
		}
		var list []ticket
		_, hdr, err := d.call(ctx, http.MethodGet, next, nil, &list)
		if err != nil {
			return nil, err
		}
		for i := range list {
			if v, _ := list[i].CustomFields[d.cfg.ResponseField].(string); v == ext && (found == nil || list[i].ID > found.ID) {
				found = &list[i]
			}
		}
		next = nextLink(hdr)
	}
	return found, nil
}

const (
	// attemptSuffix keys the time a response's ticket creation was first
	// attempted.
	attemptSuffix = ":attempt"
	// maxScanPages bounds the requester's tickets read after an attempt.
	maxScanPages = 50
)

var linkRE = regexp.MustCompile(`<([^>]+)>;\s*rel="next"`)

func nextLink(h http.Header) string {
	if h == nil {
		return ""
	}
	if m := linkRE.FindStringSubmatch(h.Get("Link")); m != nil {
		return m[1]
	}
	return ""
}

// asHTML is text as Freshdesk's HTML description: escaped, lines kept.
func asHTML(s string) string { return strings.ReplaceAll(html.EscapeString(s), "\n", "<br>") }

func (d *Destination) create(ctx context.Context, f *feedbackv1.FeedbackEvent, ext, marker, email string) error {
	data := helpdesk.TicketData(f)
	subject, err := helpdesk.Render(d.rules.Subject, data)
	if err != nil {
		return err
	}
	desc, err := helpdesk.Render(d.rules.Body, data)
	if err != nil {
		return err
	}
	tk := map[string]any{
		"email": email, "subject": helpdesk.Cut(subject, 250), "description": asHTML(desc),
		"status": d.cfg.Status, "priority": priorities[d.rules.Priority(f)], "source": d.cfg.Source,
		"tags":          append(append([]string{"closedloop", marker}, d.cfg.Tags...), helpdesk.LabelTags(f)...),
		"custom_fields": map[string]any{d.cfg.ResponseField: ext},
	}
	if n := f.GetRespondent().GetName(); n != "" && email == f.GetRespondent().GetEmail() {
		tk["name"] = n
	}
	if d.cfg.Type != "" {
		tk["type"] = d.cfg.Type
	}
	if d.cfg.GroupID != 0 {
		tk["group_id"] = d.cfg.GroupID
	}
	// The attempt is recorded before the POST: a crash after it leaves the
	// trace find follows.
	if err := d.rdb.SetNX(ctx, d.ticketKey+ext+attemptSuffix, d.now().Unix(), 90*24*time.Hour).Err(); err != nil {
		return sink.Retryable(fmt.Errorf("redis: recording the creation attempt of %s: %w", ext, err), 0)
	}
	var out ticket
	if _, _, err := d.call(ctx, http.MethodPost, d.api+"/tickets", tk, &out); err != nil {
		return err
	}
	_ = d.rdb.Set(context.WithoutCancel(ctx), d.ticketKey+ext, out.ID, 90*24*time.Hour).Err()
	return nil
}

func (d *Destination) note(ctx context.Context, f *feedbackv1.FeedbackEvent, t *ticket, marker string) error {
	data := helpdesk.TicketData(f)
	body, err := helpdesk.Render(d.rules.Body, data)
	if err != nil {
		return err
	}
	head := helpdesk.UpdateHead(f, data)
	id := strconv.FormatInt(t.ID, 10)
	if _, _, err := d.call(ctx, http.MethodPost, d.api+"/tickets/"+id+"/notes", map[string]any{"body": asHTML(head + "\n\n" + body), "private": true}, nil); err != nil {
		return err
	}
	_, _, err = d.call(ctx, http.MethodPut, d.api+"/tickets/"+id, map[string]any{"tags": append(append([]string(nil), t.Tags...), marker)}, nil)
	return err
}

func (d *Destination) classify(ctx context.Context, method string, a *helpdesk.Answer) error {
	var e struct {
		Description string `json:"description"`
		Message     string `json:"message"`
		Errors      []struct {
			Field, Message, Code string
		} `json:"errors"`
	}
	_ = json.Unmarshal(a.Body, &e)
	what := strings.TrimSpace(e.Description + " " + e.Message)
	for _, fe := range e.Errors {
		what += fmt.Sprintf(" [%s: %s (%s)]", fe.Field, fe.Message, fe.Code)
	}
	if what == "" {
		what = strings.TrimSpace(string(a.Body[:min(len(a.Body), 200)]))
	}
	msg := fmt.Errorf("freshdesk %s: %s answered %d %s: %s", d.cfg.Name, method, a.Status, http.StatusText(a.Status), what)
	return d.client.Classify(ctx, a, msg, d.Flag, d.now(), false) // Freshdesk: retry 429 and 5xx only
}
