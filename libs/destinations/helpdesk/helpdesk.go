// Package helpdesk is what the helpdesk destinations (Zendesk, Freshdesk)
// share: the rules that choose the responses and the priority, the subject
// and body templates and their data, the response's key and the event
// markers on its ticket, the disabled flag a refused credential sets, the
// account-wide rate, and the in-order delivery of a batch.
package helpdesk

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
	"strings"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/expr"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// DefaultWhen selects detractors (segments exist only on NPS-type scales).
const DefaultWhen = `event.segment == Segment.SEGMENT_DETRACTOR`

// PriorityRule maps events to a priority (urgent, high, normal, low).
type PriorityRule struct {
	When     string `yaml:"when"`
	Priority string `yaml:"priority"`
}

// DefaultPriorities: the enricher's priority lane is urgent, the rest high.
var DefaultPriorities = []PriorityRule{{When: `event.enrichment.lane == Lane.LANE_PRIORITY`, Priority: "urgent"}, {When: `true`, Priority: "high"}}

// Priorities is the vocabulary of PriorityRule.Priority.
var Priorities = map[string]bool{"urgent": true, "high": true, "normal": true, "low": true}

// Rules are a destination's compiled rules and templates.
type Rules struct {
	When    *expr.Bool
	prios   []compiledRule
	Subject *template.Template
	Body    *template.Template
}

type compiledRule struct {
	when     *expr.Bool
	priority string
}

// CompileRules compiles when (default DefaultWhen), the priority rules
// (default DefaultPriorities) and the templates (defaults given).
func CompileRules(when string, prios []PriorityRule, subject, body, defSubject, defBody string) (*Rules, error) {
	r := &Rules{}
	if when == "" {
		when = DefaultWhen
	}
	var err error
	if r.When, err = expr.CompileBool(when); err != nil {
		return nil, fmt.Errorf("when: %w", err)
	}
	if len(prios) == 0 {
		prios = DefaultPriorities
	}
	for i, p := range prios {
		if !Priorities[p.Priority] {
			return nil, fmt.Errorf("priorities[%d]: priority %q is not urgent, high, normal or low", i, p.Priority)
		}
		w, err := expr.CompileBool(p.When)
		if err != nil {
			return nil, fmt.Errorf("priorities[%d].when: %w", i, err)
		}
		r.prios = append(r.prios, compiledRule{when: w, priority: p.Priority})
	}
	if r.Subject, err = parse("subject", subject, defSubject); err != nil {
		return nil, err
	}
	if r.Body, err = parse("body", body, defBody); err != nil {
		return nil, err
	}
	return r, nil
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

// Priority is the priority of the first rule that holds ("normal" if none).
func (r *Rules) Priority(f *feedbackv1.FeedbackEvent) string {
	for _, p := range r.prios {
		if ok, err := p.when.Eval(f); err == nil && ok {
			return p.priority
		}
	}
	return "normal"
}

// Render executes a template over data; failing is permanent for the event
// (reason kafkaio.ReasonTemplate).
func Render(t *template.Template, data map[string]any) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", sink.Permanent(kafkaio.Permanent(kafkaio.ReasonTemplate, fmt.Errorf("%s template: %w", t.Name(), err)))
	}
	return strings.TrimSpace(b.String()), nil
}

// ExternalID is the key of an event's response on its ticket:
// <source>/<subject type>/<subject id>.
func ExternalID(f *feedbackv1.FeedbackEvent) string {
	return f.Source + "/" + strings.ToLower(strings.TrimPrefix(f.GetSubject().GetType().String(), "SUBJECT_TYPE_")) + "/" + f.GetSubject().GetId()
}

// Marker is the tag a ticket carries for each event version it holds.
func Marker(eventID string) string {
	sum := sha256.Sum256([]byte(eventID))
	return "closedloop_ev_" + hex.EncodeToString(sum[:6])
}

// LabelTags are the enricher's labels as tags (closedloop_<label>).
func LabelTags(f *feedbackv1.FeedbackEvent) []string {
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

// Flag is a helpdesk's disabled flag, set when the vendor refuses its
// credential; it names the credential (Fingerprint), so replacing the
// credential clears it at start.
type Flag = sink.DisabledFlag

// Fingerprint names a credential without revealing it.
func Fingerprint(credential string) string {
	sum := sha256.Sum256([]byte(credential))
	return hex.EncodeToString(sum[:6])
}

// Refused disables the destination: the credential was refused (401/403).
// The error returned holds the event (retryable): nothing is dead-lettered.
func Refused(ctx context.Context, f *Flag, status int, now time.Time, cause error) error {
	why := fmt.Sprintf("%d %s at %s: the credential was refused (revoked, expired, or without the right)",
		status, http.StatusText(status), now.UTC().Format(time.RFC3339))
	if err := f.Disable(ctx, why); err != nil {
		return sink.Retryable(fmt.Errorf("%w; recording it failed: %v", cause, err), 0)
	}
	return sink.Retryable(cause, 0)
}

// DeliverInOrder delivers a batch's events one by one with deliver; a
// retryable failure holds the rest (a response's versions stay in order).
// A disabled destination holds them all.
func DeliverInOrder(events []*sink.Event, off *Flag, name string, deliver func(*sink.Event) error) []error {
	if why, disabled := off.Disabled(); disabled {
		err := sink.Retryable(fmt.Errorf("%s is disabled: %s (replace the credential and restart, or closedloopctl resume)", name, why), 0)
		out := make([]error, len(events))
		for i := range out {
			out[i] = err
		}
		return out
	}
	var errs []error
	for i, ev := range events {
		err := deliver(ev)
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

// Client makes a helpdesk's API calls: the account's shared rate first,
// the credential, JSON in and out.
type Client struct {
	HTTP *http.Client
	Rate sink.SharedRate
	Auth string // the Authorization header
	Name string // for errors
}

// Answer is an API answer that is not 2xx.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends the request and decodes a 2xx answer into out. A transport
// failure is a retryable error; a non-2xx answer is returned as *Answer for
// the destination to classify.
func (c *Client) Do(ctx context.Context, method, target string, hdr http.Header, in, out any) (*Answer, error) {
	if err := c.Rate.Wait(ctx); err != nil {
		return nil, sink.Retryable(fmt.Errorf("waiting for the account's rate: %w", err), 0)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, sink.Permanent(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, sink.Permanent(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", c.Auth)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, sink.Retryable(fmt.Errorf("%s: %s: %w", c.Name, method, err), 0)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return &Answer{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, sink.Retryable(fmt.Errorf("%s: %s answered %d with a body that is not JSON", c.Name, method, resp.StatusCode), 0)
		}
	}
	return nil, nil
}

// Cut shortens s to n runes.
func Cut(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// Account is what the kinds' accounts share for Instances.
type Account interface {
	AccountName() string
}

// Opened is a helpdesk destination: its rule, its disabled flag, Deliver.
type Opened interface {
	sink.Destination
	Rule() *expr.Bool
	Load(ctx context.Context) error
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Instances decodes a helpdesk kind's section ({accounts: [...]}, unknown
// keys refused) and makes an Instance per account with build: its consumer
// group, its checkpoint in Redis, its rule as the filter, the disabled
// flag read when it opens.
func Instances[A Account](section *yaml.Node, env sink.KindEnv, build func(A, sink.KindEnv) (Opened, error)) ([]sink.Instance, error) {
	var c struct {
		Accounts []A `yaml:"accounts"`
	}
	if err := sink.DecodeStrict(section, &c); err != nil {
		return nil, err
	}
	if len(c.Accounts) == 0 {
		return nil, errors.New("accounts: name at least one account")
	}
	seen := map[string]bool{}
	var out []sink.Instance
	for i, a := range c.Accounts {
		name := a.AccountName()
		at := fmt.Sprintf("accounts[%d] (%s)", i, name)
		if !nameRE.MatchString(name) || seen[name] {
			return nil, fmt.Errorf("%s: name must be unique, lower-case letters, digits and '-'", at)
		}
		seen[name] = true
		d, err := build(a, env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		cp := sink.RedisCheckpoint{RDB: env.Redis, Prefix: env.RedisPrefix + name + ":done:", TTL: 7 * 24 * time.Hour}
		out = append(out, sink.Instance{Name: name, Group: env.GroupPrefix + name, Checkpoint: cp, Filter: sink.FilterOf(d.Rule()),
			Open: func(ctx context.Context) (sink.Destination, error) { return d, d.Load(ctx) }})
	}
	return out, nil
}

// NewClient is the API client of an account at baseURL: its requests per
// minute shared by every replica in one Redis bucket per account host (a
// burst of a tenth of a minute), no redirects followed.
func NewClient(name, auth, baseURL string, perMinute int, timeout time.Duration, env sink.KindEnv) (Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return Client{}, fmt.Errorf("url %q: the account's base URL (https://…)", baseURL)
	}
	if perMinute <= 0 || timeout <= 0 {
		return Client{}, errors.New("requests_per_minute and timeout must be positive")
	}
	return Client{Auth: auth, Name: name,
		HTTP: &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		Rate: sink.SharedRate{RDB: env.Redis, Key: env.RedisPrefix + "rate:" + u.Host,
			Every: time.Minute / time.Duration(perMinute), Burst: max(1, perMinute/10)}}, nil
}

// Classify is the class of a non-2xx answer whose error is msg: 429 waits
// for Retry-After on every replica (the limit is the account's); 401 and
// 403 disable the destination and hold the event; 5xx, 408 (and 409 when
// conflictRetries) are retried; the rest is permanent for the event.
func (c *Client) Classify(ctx context.Context, a *Answer, msg error, flag *Flag, now time.Time, conflictRetries bool) error {
	switch {
	case a.Status == http.StatusTooManyRequests:
		after := retry.After(a.Header.Get("Retry-After"), now, 0)
		if after <= 0 {
			after = 10 * time.Second
		}
		_ = c.Rate.Push(ctx, after)
		return sink.Retryable(msg, after)
	case a.Status == http.StatusUnauthorized || a.Status == http.StatusForbidden:
		return Refused(ctx, flag, a.Status, now, msg)
	case a.Status >= 500 || a.Status == http.StatusRequestTimeout || conflictRetries && a.Status == http.StatusConflict:
		return sink.Retryable(msg, retry.After(a.Header.Get("Retry-After"), now, time.Minute))
	}
	return sink.Permanent(msg)
}

// Base is what every helpdesk account of the pipeline file has (inlined in
// each kind's Account).
type Base struct {
	// Name identifies the destination (status, pause, dead letters, its
	// consumer group): lower-case letters, digits and '-'.
	Name string `yaml:"name"`
	// URL is the account's base URL (https://acme.zendesk.com).
	URL string `yaml:"url"`
	// When is a CEL expression over `event` selecting the responses that
	// get a ticket (default: detractors).
	When string `yaml:"when"`
	// Priorities: the first rule whose `when` holds gives the priority
	// (urgent, high, normal, low); default: the priority lane urgent, the
	// rest high.
	Priorities []PriorityRule `yaml:"priorities"`
	// Subject is a Go template over TicketData.
	Subject string `yaml:"subject"`
	// Tags are added to every ticket (besides closedloop, the event
	// markers and closedloop_<label>); Type and GroupID route it.
	Tags    []string `yaml:"tags"`
	Type    string   `yaml:"type"`
	GroupID int64    `yaml:"group_id"`
	// FallbackRequester is the requester of a response without an email
	// (without it such a response is dead-lettered: a ticket needs one).
	FallbackRequester string `yaml:"fallback_requester"`
	// RequestsPerMinute is the plan's limit for the whole account, shared
	// by every replica (default 200).
	RequestsPerMinute int `yaml:"requests_per_minute"`
	// Timeout of one request (default 10s).
	Timeout config.Duration `yaml:"timeout"`
}

// AccountName implements Account.
func (b Base) AccountName() string { return b.Name }

// Defaults fills the defaults of the rate and the timeout.
func (b *Base) Defaults() {
	if b.RequestsPerMinute == 0 {
		b.RequestsPerMinute = 200
	}
	if b.Timeout.Duration == 0 {
		b.Timeout.Duration = 10 * time.Second
	}
}

// Requester is the ticket's requester: the respondent's email, else the
// fallback; without either the event is permanent (kind names the vendor).
func (b Base) Requester(kind string, f *feedbackv1.FeedbackEvent) (email, name string, err error) {
	if e := f.GetRespondent().GetEmail(); e != "" {
		return e, f.GetRespondent().GetName(), nil
	}
	if b.FallbackRequester != "" {
		return b.FallbackRequester, "", nil
	}
	return "", "", sink.Permanent(fmt.Errorf("%s %s: the response has no respondent email and no fallback_requester is set: a ticket needs a requester", kind, b.Name))
}

// The default templates of every helpdesk.
const (
	DefaultSubject = `{{.SegmentWord}} {{.Score}}{{with .Respondent}} from {{.}}{{end}}{{with .Survey}} ({{.}}){{end}}`
	DefaultBody    = `{{.SegmentWord}} response{{with .Survey}} to {{.}}{{end}}: score {{.Score}}.
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

// UpdateHead is the first line of a later version's comment or note.
func UpdateHead(f *feedbackv1.FeedbackEvent, data map[string]any) string {
	head := fmt.Sprintf("Updated response (%s): score %s", data["Kind"], data["Score"])
	if c := f.GetComment(); c != "" {
		head += ", \"" + Cut(c, 120) + "\""
	}
	return head
}
