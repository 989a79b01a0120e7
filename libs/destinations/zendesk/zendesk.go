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
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/expr"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Config is the `sinks.zendesk` section of the pipeline file.
type Config struct {
	Accounts []Account `yaml:"accounts"`
}

// Account is one Zendesk destination.
type Account struct {
	// Name identifies the destination: lower-case letters, digits and '-'.
	Name string `yaml:"name"`
	// URL is the account's base URL (https://acme.zendesk.com).
	URL string `yaml:"url"`
	// Email and APIToken (a secret reference) authenticate as
	// "{email}/token:{api_token}"; or OAuthToken (a secret reference) as a
	// bearer token.
	Email      string `yaml:"email"`
	APIToken   string `yaml:"api_token"`
	OAuthToken string `yaml:"oauth_token"`
	// When is a CEL expression over `event` selecting the responses that
	// get a ticket (default: detractors).
	When string `yaml:"when"`
	// Priorities: the first rule whose `when` holds gives the priority
	// (urgent, high, normal, low); default: the priority lane urgent, the
	// rest high.
	Priorities []PriorityRule `yaml:"priorities"`
	// Subject and Comment are Go templates over the ticket data (see
	// docs/destinations.md); defaults say score, segment, survey, comment,
	// respondent and the account context.
	Subject string `yaml:"subject"`
	Comment string `yaml:"comment"`
	// Tags are added to every ticket; Type is problem, incident, question or
	// task; GroupID and BrandID route it.
	Tags    []string `yaml:"tags"`
	Type    string   `yaml:"type"`
	GroupID int64    `yaml:"group_id"`
	BrandID int64    `yaml:"brand_id"`
	// FallbackRequester is the requester of a response without an email
	// (without it such a response is dead-lettered: Zendesk needs one).
	FallbackRequester string `yaml:"fallback_requester"`
	// RequestsPerMinute is the plan's limit for the whole account (Team
	// 200, Growth and Professional 400, Enterprise 700); default 200.
	RequestsPerMinute int `yaml:"requests_per_minute"`
	// Timeout of one request (default 10s).
	Timeout config.Duration `yaml:"timeout"`
}

// PriorityRule maps events to a ticket priority.
type PriorityRule struct {
	When     string `yaml:"when"`
	Priority string `yaml:"priority"`
}

// DefaultWhen selects detractors (segments exist only on NPS-type scales).
const DefaultWhen = `event.segment == Segment.SEGMENT_DETRACTOR`

// DefaultPriorities: the enricher's priority lane is urgent, the rest high.
var DefaultPriorities = []PriorityRule{{When: `event.enrichment.lane == Lane.LANE_PRIORITY`, Priority: "urgent"}, {When: `true`, Priority: "high"}}

// DefaultSubject and DefaultComment are the templates without configuration.
const (
	DefaultSubject = `{{.SegmentWord}} {{.Score}}{{with .Respondent}} from {{.}}{{end}}{{with .Survey}} ({{.}}){{end}}`
	DefaultComment = `{{.SegmentWord}} response{{with .Survey}} to {{.}}{{end}}: score {{.Score}}.
{{with .Comment}}
"{{.}}"
{{end}}
Respondent: {{or .Respondent "-"}}{{with .Email}} <{{.}}>{{end}}
{{- range $k, $v := .Account}}
{{$k}}: {{$v}}{{end}}
{{with .Labels}}Labels: {{.}}
{{end}}{{with .Link}}Response: {{.}}
{{end}}
closedloop event {{.EventID}} ({{.Source}}, received {{.Received}})`
)

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	priorities = map[string]bool{"urgent": true, "high": true, "normal": true, "low": true}
	types      = map[string]bool{"": true, "problem": true, "incident": true, "question": true, "task": true}
)

// Kind registers Zendesk with a hosting service.
var Kind = sink.Kind{Name: "zendesk", Instances: instances}

func instances(section *yaml.Node, env sink.KindEnv) ([]sink.Instance, error) {
	var c Config
	if err := sink.DecodeStrict(section, &c); err != nil {
		return nil, err
	}
	if len(c.Accounts) == 0 {
		return nil, errors.New("accounts: name at least one account")
	}
	seen := map[string]bool{}
	var out []sink.Instance
	for i := range c.Accounts {
		a := c.Accounts[i]
		at := fmt.Sprintf("accounts[%d] (%s)", i, a.Name)
		if !nameRE.MatchString(a.Name) || seen[a.Name] {
			return nil, fmt.Errorf("%s: name must be unique, lower-case letters, digits and '-'", at)
		}
		seen[a.Name] = true
		d, err := newAccount(a, env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		cp := sink.RedisCheckpoint{RDB: env.Redis, Prefix: env.RedisPrefix + a.Name + ":done:", TTL: 7 * 24 * time.Hour}
		out = append(out, sink.Instance{Name: a.Name, Group: env.GroupPrefix + a.Name, Checkpoint: cp, Filter: sink.FilterOf(d.when),
			Open: func(ctx context.Context) (sink.Destination, error) { return d, d.load(ctx) }})
	}
	return out, nil
}

type priorityRule struct {
	when     *expr.Bool
	priority string
}

// Destination opens and updates the tickets of one account.
type Destination struct {
	cfg         Account
	api         string // https://acme.zendesk.com/api/v2
	auth        string // the Authorization header
	fingerprint string // of the credential: a disabled flag of another one is stale
	client      *http.Client
	rate        sink.SharedRate
	rdb         redis.UniversalClient
	offKey      string
	ticketKey   string // prefix of "response → its ticket id"
	off         atomic.Pointer[string]
	when        *expr.Bool
	prios       []priorityRule
	subjectTmpl *template.Template
	commentTmpl *template.Template
	now         func() time.Time
}

func newAccount(a Account, env sink.KindEnv) (*Destination, error) {
	d := &Destination{cfg: a, rdb: env.Redis, offKey: env.RedisPrefix + a.Name + ":disabled", ticketKey: env.RedisPrefix + a.Name + ":ticket:", now: time.Now}
	u, err := url.Parse(a.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("url: the account's base URL, https://<subdomain>.zendesk.com")
	}
	d.api = strings.TrimRight(a.URL, "/") + "/api/v2"
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
		d.auth = "Basic " + basic(a.Email+"/token", string(s.Reveal()))
	case a.OAuthToken != "":
		s, err := config.ResolveSecret(a.OAuthToken, env.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("oauth_token: %w", err)
		}
		d.auth = "Bearer " + string(s.Reveal())
	default:
		return nil, errors.New("set api_token (with email) or oauth_token")
	}
	sum := sha256.Sum256([]byte(d.auth))
	d.fingerprint = hex.EncodeToString(sum[:6])
	if a.When == "" {
		a.When = DefaultWhen
	}
	if d.when, err = expr.CompileBool(a.When); err != nil {
		return nil, fmt.Errorf("when: %w", err)
	}
	rules := a.Priorities
	if len(rules) == 0 {
		rules = DefaultPriorities
	}
	for i, r := range rules {
		if !priorities[r.Priority] {
			return nil, fmt.Errorf("priorities[%d]: priority %q is not urgent, high, normal or low", i, r.Priority)
		}
		w, err := expr.CompileBool(r.When)
		if err != nil {
			return nil, fmt.Errorf("priorities[%d].when: %w", i, err)
		}
		d.prios = append(d.prios, priorityRule{when: w, priority: r.Priority})
	}
	if !types[a.Type] {
		return nil, fmt.Errorf("type %q is not problem, incident, question or task", a.Type)
	}
	if d.subjectTmpl, err = parse("subject", a.Subject, DefaultSubject); err != nil {
		return nil, err
	}
	if d.commentTmpl, err = parse("comment", a.Comment, DefaultComment); err != nil {
		return nil, err
	}
	if a.RequestsPerMinute == 0 {
		a.RequestsPerMinute = 200
	}
	if a.Timeout.Duration == 0 {
		a.Timeout.Duration = 10 * time.Second
	}
	if a.RequestsPerMinute < 0 || a.Timeout.Duration < 0 {
		return nil, errors.New("requests_per_minute and timeout must be positive")
	}
	d.cfg = a
	d.client = &http.Client{Timeout: a.Timeout.Duration, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// The plan's limit is the account's, whatever the replicas: one bucket
	// per account host in Redis, a burst of a tenth of a minute.
	d.rate = sink.SharedRate{RDB: env.Redis, Key: env.RedisPrefix + "rate:" + u.Host,
		Every: time.Minute / time.Duration(a.RequestsPerMinute), Burst: max(1, a.RequestsPerMinute/10)}
	return d, nil
}

func parse(name, src, def string) (*template.Template, error) {
	if src == "" {
		src = def
	}
	t, err := template.New(name).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// load reads the disabled flag (the destination's Open). A flag set for
// another credential is stale: the credential was replaced.
func (d *Destination) load(ctx context.Context) error {
	v, err := d.rdb.Get(ctx, d.offKey).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return err
	}
	fp, why, _ := strings.Cut(v, " ")
	if fp != d.fingerprint {
		return d.rdb.Del(ctx, d.offKey).Err()
	}
	d.off.Store(&why)
	return nil
}

// Disabled implements sink.Disabler.
func (d *Destination) Disabled() (string, bool) {
	if p := d.off.Load(); p != nil {
		return *p, true
	}
	return "", false
}

// Enable implements sink.Enabler.
func (d *Destination) Enable(ctx context.Context) error {
	if err := d.rdb.Del(ctx, d.offKey).Err(); err != nil {
		return err
	}
	d.off.Store(nil)
	return nil
}

func (d *Destination) disable(ctx context.Context, why string) error {
	d.off.Store(&why)
	return d.rdb.Set(context.WithoutCancel(ctx), d.offKey, d.fingerprint+" "+why, 0).Err()
}

// Deliver implements sink.Destination: the events of a batch in order; a
// retryable failure holds the rest (a response's versions stay in order).
func (d *Destination) Deliver(ctx context.Context, events []*sink.Event) []error {
	if why, off := d.Disabled(); off {
		return all(len(events), sink.Retryable(fmt.Errorf("zendesk %s is disabled: %s (replace the credential and restart, or closedloopctl resume)", d.cfg.Name, why), 0))
	}
	var errs []error
	for i, ev := range events {
		err := d.deliver(ev.Ctx, ev.Feedback)
		if err == nil {
			continue
		}
		if errs == nil {
			errs = make([]error, len(events))
		}
		errs[i] = err
		if class, _, _ := sink.Classify(err); class != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT {
			for j := i + 1; j < len(events); j++ {
				errs[j] = sink.Retryable(errors.New("held behind an earlier event of the batch that failed"), 0)
			}
			break
		}
	}
	return errs
}

func all(n int, err error) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

// ExternalID is the ticket's external_id of an event: its response.
func ExternalID(f *feedbackv1.FeedbackEvent) string {
	return f.Source + "/" + strings.ToLower(strings.TrimPrefix(f.GetSubject().GetType().String(), "SUBJECT_TYPE_")) + "/" + f.GetSubject().GetId()
}

// Marker is the tag a ticket carries for each event version it holds.
func Marker(eventID string) string {
	sum := sha256.Sum256([]byte(eventID))
	return "closedloop_ev_" + hex.EncodeToString(sum[:6])
}

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
				return d.remember(ctx, ext, t.ID) // this version is on the ticket already
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

func (d *Destination) remember(ctx context.Context, ext string, id int64) error {
	_ = d.rdb.Set(context.WithoutCancel(ctx), d.ticketKey+ext, id, 90*24*time.Hour).Err() // a hint: Zendesk is the record
	return nil
}

var errClosed = errors.New("the ticket is closed")

func (d *Destination) create(ctx context.Context, f *feedbackv1.FeedbackEvent, ext, marker string, followUpOf int64) error {
	data := ticketData(f)
	subject, err := render(d.subjectTmpl, data)
	if err != nil {
		return err
	}
	body, err := render(d.commentTmpl, data)
	if err != nil {
		return err
	}
	email, name := f.GetRespondent().GetEmail(), f.GetRespondent().GetName()
	if email == "" {
		if d.cfg.FallbackRequester == "" {
			return sink.Permanent(fmt.Errorf("zendesk %s: the response has no respondent email and no fallback_requester is set: Zendesk needs a requester", d.cfg.Name))
		}
		email = d.cfg.FallbackRequester
	}
	tk := map[string]any{
		"subject":     cut(subject, 250),
		"comment":     map[string]any{"body": body, "public": false},
		"requester":   map[string]any{"email": email, "name": name},
		"external_id": ext,
		"tags":        append(append([]string{"closedloop", marker}, d.cfg.Tags...), labelTags(f)...),
		"priority":    d.priority(f),
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
	return d.remember(ctx, ext, out.Ticket.ID)
}

func (d *Destination) comment(ctx context.Context, f *feedbackv1.FeedbackEvent, id int64, marker string) error {
	data := ticketData(f)
	body, err := render(d.commentTmpl, data)
	if err != nil {
		return err
	}
	head := fmt.Sprintf("Updated response (%s): score %s", data["Kind"], data["Score"])
	if c := f.GetComment(); c != "" {
		head += ", \"" + cut(c, 120) + "\""
	}
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

func (d *Destination) priority(f *feedbackv1.FeedbackEvent) string {
	for _, r := range d.prios {
		if ok, err := r.when.Eval(f); err == nil && ok {
			return r.priority
		}
	}
	return "normal"
}

func labelTags(f *feedbackv1.FeedbackEvent) []string {
	var out []string
	for _, l := range f.GetEnrichment().GetLabels() {
		out = append(out, "closedloop_"+strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
				return r
			}
			return '_'
		}, strings.ToLower(l)))
	}
	return out
}

// call makes one API request (after the account's shared rate) and decodes
// a 2xx answer into out; it returns the status and the classified error.
func (d *Destination) call(ctx context.Context, method, target string, hdr http.Header, in, out any) (int, error) {
	if err := d.rate.Wait(ctx); err != nil {
		return 0, sink.Retryable(fmt.Errorf("waiting for the account's rate: %w", err), 0)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, sink.Permanent(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return 0, sink.Permanent(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", d.auth)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return 0, sink.Retryable(fmt.Errorf("zendesk %s: %s %s: %w", d.cfg.Name, method, strings.TrimPrefix(target, d.api), err), 0)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out != nil {
			if err := json.Unmarshal(raw, out); err != nil {
				return resp.StatusCode, sink.Retryable(fmt.Errorf("zendesk %s: %s answered %d with a body that is not JSON", d.cfg.Name, method, resp.StatusCode), 0)
			}
		}
		return resp.StatusCode, nil
	}
	return resp.StatusCode, d.classify(ctx, method, resp, raw)
}

func (d *Destination) classify(ctx context.Context, method string, resp *http.Response, raw []byte) error {
	var e struct {
		Error       any            `json:"error"`
		Description string         `json:"description"`
		Details     map[string]any `json:"details"`
	}
	_ = json.Unmarshal(raw, &e)
	what := strings.TrimSpace(fmt.Sprintf("%v %s", firstNonNil(e.Error, ""), e.Description))
	if e.Details != nil {
		b, _ := json.Marshal(e.Details)
		what += " " + string(b)
	}
	if what == "" {
		what = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
	}
	status := resp.StatusCode
	msg := fmt.Errorf("zendesk %s: %s answered %d %s: %s", d.cfg.Name, method, status, http.StatusText(status), what)
	switch {
	case status == http.StatusTooManyRequests:
		after := retry.After(resp.Header.Get("Retry-After"), d.now(), 0)
		if after <= 0 {
			after = 10 * time.Second
		}
		_ = d.rate.Push(ctx, after) // the account's limit: every replica waits
		return sink.Retryable(msg, after)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		why := fmt.Sprintf("%d %s at %s: the API token or OAuth token was refused (revoked, expired, or the agent lacks the right)",
			status, http.StatusText(status), d.now().UTC().Format(time.RFC3339))
		if err := d.disable(ctx, why); err != nil {
			return sink.Retryable(fmt.Errorf("%w; recording it failed: %v", msg, err), 0)
		}
		return sink.Retryable(msg, 0) // held, not dead-lettered: the credential is the problem
	case status == http.StatusConflict || status >= 500 || status == http.StatusRequestTimeout:
		return sink.Retryable(msg, retry.After(resp.Header.Get("Retry-After"), d.now(), time.Minute))
	}
	return sink.Permanent(msg)
}

func firstNonNil(v, def any) any {
	if v == nil {
		return def
	}
	return v
}

func basic(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func cut(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// render executes a template; failing is permanent for the event.
func render(t *template.Template, data map[string]any) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", sink.Permanent(kafkaio.Permanent(kafkaio.ReasonTemplate, fmt.Errorf("%s template: %w", t.Name(), err)))
	}
	return strings.TrimSpace(b.String()), nil
}
