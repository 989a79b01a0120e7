// Package zendesk is the Zendesk Support destination: a ticket for each
// response its rule selects (by default every detractor), one ticket per
// response however often it is delivered or updated.
//
//   - The ticket's external_id is the response's subject key
//     (<source>/<subject type>/<subject id>); its tags carry a marker of
//     every event version it holds (closedloop_ev_<hash>).
//   - Before creating, the destination looks the response's ticket up (its
//     own record in Redis, else GET /api/v2/tickets.json?external_id=): a
//     later version of the response (a comment added, the score changed)
//     becomes a private comment on that ticket; a version the ticket
//     already holds is done. The POST carries an Idempotency-Key derived
//     from the event, so a retry after a lost answer returns the ticket
//     Zendesk made (x-idempotency-lookup: hit): a crash between the POST
//     and the checkpoint never makes a second ticket.
//   - A closed ticket cannot take a comment (422): the later version opens
//     a follow-up ticket (via_followup_source_id) and the response follows
//     it from then on.
//   - Subject and comment are Go templates of the pipeline file; an event
//     they cannot render is dead-lettered with the reason.
//   - The account's plan limit (requests per minute) is enforced across
//     every replica in Redis; a 429 pushes every replica back by its
//     Retry-After. 5xx, 409 and timeouts are retried; 422 and other 4xx are
//     permanent for the event. 401 and 403 (a revoked or expired token)
//     disable the destination with the reason, shown in status: deliveries
//     wait (nothing is dead-lettered) until the credential is replaced (a
//     restart with a new one clears it) or an operator resumes it.
package zendesk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
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

// Config is the `sinks.zendesk` section of the pipeline file.
type Config struct {
	Accounts []Account `yaml:"accounts"`
}

// Account is one Zendesk destination: the fields every helpdesk has
// (helpdesk.Base: name, url, when, priorities, subject, tags, type,
// group_id, fallback_requester, requests_per_minute, timeout) and Zendesk's.
type Account struct {
	helpdesk.Base `yaml:",inline"`
	// Email and APIToken (a secret reference) authenticate as
	// "{email}/token:{api_token}"; or OAuthToken (a secret reference) as a
	// bearer token.
	Email      string `yaml:"email"`
	APIToken   string `yaml:"api_token"`
	OAuthToken string `yaml:"oauth_token"`
	// Comment is the template of the ticket's first (private) comment.
	Comment string `yaml:"comment"`
	// BrandID routes the ticket to a brand.
	BrandID int64 `yaml:"brand_id"`
}

var types = map[string]bool{"": true, "problem": true, "incident": true, "question": true, "task": true}

// Kind registers Zendesk with a hosting service.
var Kind = sink.Kind{Name: "zendesk", Instances: instances}

func instances(section *yaml.Node, env sink.KindEnv) ([]sink.Instance, error) {
	return helpdesk.Instances(section, env, func(a Account, env sink.KindEnv) (helpdesk.Opened, error) { return newAccount(a, env) })
}

// Rule is the rule choosing the responses that get a ticket.
func (d *Destination) Rule() *expr.Bool { return d.rules.When }

// Destination opens and updates the tickets of one account. Its Flag is the
// disabled flag (sink.Disabler, sink.Enabler).
type Destination struct {
	*helpdesk.Flag
	cfg       Account
	api       string // https://acme.zendesk.com/api/v2
	client    helpdesk.Client
	rdb       redis.UniversalClient
	ticketKey string // prefix of "response → its ticket id"
	rules     *helpdesk.Rules
	now       func() time.Time
}

func newAccount(a Account, env sink.KindEnv) (*Destination, error) {
	d := &Destination{cfg: a, rdb: env.Redis, ticketKey: env.RedisPrefix + a.Name + ":ticket:", now: time.Now}
	d.api = strings.TrimRight(a.URL, "/") + "/api/v2"
	var auth string
	var err error
	switch {
	case a.APIToken != "" && a.OAuthToken != "":
		return nil, errors.New("set api_token (with email) or oauth_token, not both")
	case a.APIToken != "":
		if !strings.Contains(a.Email, "@") {
			return nil, errors.New("api_token needs email: the agent the token belongs to")
		}
		s, err := config.ResolveSecret(a.APIToken, env.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("api_token: %w", err)
		}
		auth = "Basic " + basic(a.Email+"/token", string(s.Reveal()))
	case a.OAuthToken != "":
		s, err := config.ResolveSecret(a.OAuthToken, env.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("oauth_token: %w", err)
		}
		auth = "Bearer " + string(s.Reveal())
	default:
		return nil, errors.New("set api_token (with email) or oauth_token")
	}
	d.Flag = &helpdesk.Flag{RDB: env.Redis, Key: env.RedisPrefix + a.Name + ":disabled", Fingerprint: helpdesk.Fingerprint(auth)}
	if d.rules, err = helpdesk.CompileRules(a.When, a.Priorities, a.Subject, a.Comment, helpdesk.DefaultSubject, helpdesk.DefaultBody); err != nil {
		return nil, err
	}
	if !types[a.Type] {
		return nil, fmt.Errorf("type %q is not problem, incident, question or task", a.Type)
	}
	a.Defaults()
	d.cfg = a
	if d.client, err = helpdesk.NewClient("zendesk "+a.Name, auth, a.URL, a.RequestsPerMinute, a.Timeout.Duration, env); err != nil {
		return nil, err
	}
	return d, nil
}

// Deliver implements sink.Destination.
func (d *Destination) Deliver(_ context.Context, events []*sink.Event) []error {
	return helpdesk.DeliverInOrder(events, d.Flag, "zendesk "+d.cfg.Name, func(ev *sink.Event) error { return d.deliver(ev.Ctx, ev.Feedback) })
}

// ExternalID is the ticket's external_id of an event: its response.
func ExternalID(f *feedbackv1.FeedbackEvent) string { return helpdesk.ExternalID(f) }

// Marker is the tag a ticket carries for each event version it holds.
func Marker(eventID string) string { return helpdesk.Marker(eventID) }

type ticket struct {
	ID     int64    `json:"id"`
	Status string   `json:"status"`
	Tags   []string `json:"tags"`
}

func (d *Destination) deliver(ctx context.Context, f *feedbackv1.FeedbackEvent) error {
	ext := ExternalID(f)
	marker := Marker(f.EventId)
	t, err := d.find(ctx, ext)
	if err != nil {
		return err
	}
	if t != nil {
		for _, tag := range t.Tags {
			if tag == marker {
				d.remember(ctx, ext, t.ID) // this version is on the ticket already
				return nil
			}
		}
		if t.Status != "closed" {
			err := d.comment(ctx, f, t.ID, marker)
			if !errors.Is(err, errClosed) {
				return err
			}
		}
		return d.create(ctx, f, ext, marker, t.ID) // a follow-up of the closed ticket
	}
	return d.create(ctx, f, ext, marker, 0)
}

// call is one API call; a non-2xx answer is classified.
func (d *Destination) call(ctx context.Context, method, target string, hdr http.Header, in, out any) (int, error) {
	a, err := d.client.Do(ctx, method, target, hdr, in, out)
	if err != nil || a == nil {
		return http.StatusOK, err
	}
	return a.Status, d.classify(ctx, method, a)
}

// find returns the response's ticket: the one recorded in Redis (read back
// for its status and tags), else the newest with its external id.
func (d *Destination) find(ctx context.Context, ext string) (*ticket, error) {
	if id, err := d.rdb.Get(ctx, d.ticketKey+ext).Int64(); err == nil && id > 0 {
		var out struct{ Ticket ticket }
		status, err := d.call(ctx, http.MethodGet, d.api+"/tickets/"+strconv.FormatInt(id, 10)+".json", nil, nil, &out)
		if err == nil {
			return &out.Ticket, nil
		}
		if status != http.StatusNotFound {
			return nil, err
		}
		// deleted at Zendesk: look it up again by its external id
	}
	var out struct {
		Tickets []ticket `json:"tickets"`
	}
	if _, err := d.call(ctx, http.MethodGet, d.api+"/tickets.json?external_id="+url.QueryEscape(ext)+"&page[size]=100", nil, nil, &out); err != nil {
		return nil, err
	}
	if len(out.Tickets) == 0 {
		return nil, nil
	}
	sort.Slice(out.Tickets, func(i, j int) bool { return out.Tickets[i].ID > out.Tickets[j].ID })
	return &out.Tickets[0], nil
}

// remember records the response's ticket; a failure costs only a lookup
// by external id next time (Zendesk is the record).
func (d *Destination) remember(ctx context.Context, ext string, id int64) {
	_ = d.rdb.Set(context.WithoutCancel(ctx), d.ticketKey+ext, id, 90*24*time.Hour).Err()
}

var errClosed = errors.New("the ticket is closed")

func (d *Destination) create(ctx context.Context, f *feedbackv1.FeedbackEvent, ext, marker string, followUpOf int64) error {
	data := helpdesk.TicketData(f)
	subject, err := helpdesk.Render(d.rules.Subject, data)
	if err != nil {
		return err
	}
	body, err := helpdesk.Render(d.rules.Body, data)
	if err != nil {
		return err
	}
	email, name, err := d.cfg.Requester("zendesk", f)
	if err != nil {
		return err
	}
	tk := map[string]any{
		"subject":     helpdesk.Cut(subject, 250),
		"comment":     map[string]any{"body": body, "public": false},
		"requester":   map[string]any{"email": email, "name": name},
		"external_id": ext,
		"tags":        append(append([]string{"closedloop", marker}, d.cfg.Tags...), helpdesk.LabelTags(f)...),
		"priority":    d.rules.Priority(f),
	}
	if d.cfg.Type != "" {
		tk["type"] = d.cfg.Type
	}
	if d.cfg.GroupID != 0 {
		tk["group_id"] = d.cfg.GroupID
	}
	if d.cfg.BrandID != 0 {
		tk["brand_id"] = d.cfg.BrandID
	}
	if followUpOf != 0 {
		tk["via_followup_source_id"] = followUpOf
	}
	// The key is the event's: a retry of this request within Zendesk's two
	// hours returns the ticket the first made.
	sum := sha256.Sum256([]byte(ext + "\x00" + f.EventId))
	hdr := http.Header{"Idempotency-Key": {"closedloop-" + hex.EncodeToString(sum[:16])}}
	var out struct{ Ticket ticket }
	if _, err := d.call(ctx, http.MethodPost, d.api+"/tickets.json", hdr, map[string]any{"ticket": tk}, &out); err != nil {
		return err
	}
	d.remember(ctx, ext, out.Ticket.ID)
	return nil
}

func (d *Destination) comment(ctx context.Context, f *feedbackv1.FeedbackEvent, id int64, marker string) error {
	data := helpdesk.TicketData(f)
	body, err := helpdesk.Render(d.rules.Body, data)
	if err != nil {
		return err
	}
	head := helpdesk.UpdateHead(f, data)
	req := map[string]any{"ticket": map[string]any{
		"comment":         map[string]any{"body": head + "\n\n" + body, "public": false},
		"additional_tags": []string{marker},
	}}
	status, err := d.call(ctx, http.MethodPut, d.api+"/tickets/"+strconv.FormatInt(id, 10)+".json", nil, req, nil)
	if status == http.StatusUnprocessableEntity {
		return errClosed // only a closed ticket refuses a comment
	}
	return err
}

func (d *Destination) classify(ctx context.Context, method string, a *helpdesk.Answer) error {
	var e struct {
		Error       any            `json:"error"`
		Description string         `json:"description"`
		Details     map[string]any `json:"details"`
	}
	_ = json.Unmarshal(a.Body, &e)
	what := e.Description
	if e.Error != nil {
		what = strings.TrimSpace(fmt.Sprint(e.Error) + " " + what)
	}
	if e.Details != nil {
		b, _ := json.Marshal(e.Details)
		what += " " + string(b)
	}
	if what == "" {
		what = strings.TrimSpace(string(a.Body[:min(len(a.Body), 200)]))
	}
	msg := fmt.Errorf("zendesk %s: %s answered %d %s: %s", d.cfg.Name, method, a.Status, http.StatusText(a.Status), what)
	return d.client.Classify(ctx, a, msg, d.Flag, d.now(), true) // Zendesk: a 409 is a conflict worth retrying
}

func basic(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}
