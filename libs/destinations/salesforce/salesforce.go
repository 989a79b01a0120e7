// Package salesforce is the Salesforce destination
// (../shared/design/VENDOR_APIS.md §5): the respondent's Contact (or Lead)
// gets the feedback fields, a detractor gets a Task (WhoId), and an
// unsubscribe sets HasOptedOutOfEmail on every Contact and Lead with the
// email.
//
//   - OAuth 2.0 at <url>/services/oauth2/token: client credentials, or the
//     JWT bearer flow (RS256 assertion, iss = client_id, sub = username). The
//     token and instance_url are cached; a 401 INVALID_SESSION_ID gets a
//     new token and the call once more. A token endpoint that refuses the
//     client (invalid_client, invalid_grant) disables the destination
//     (held, not dead-lettered) until the credential is replaced.
//   - Records are found by SOQL on match_field (Email, or an External ID
//     field holding the email) — Contacts first, then Leads for the emails
//     no Contact has — and updated through the Composite sObject
//     collections API (PATCH /composite/sobjects, allOrNone false) in
//     batches of up to 200. An email with no record is counted
//     (unknown_contact), not dead-lettered. A contact is only written with
//     feedback newer than it holds (crm.Guard, and its Feedback At field).
//   - Per-record errors (FIELD_CUSTOM_VALIDATION_EXCEPTION, DUPLICATE_VALUE,
//     REQUIRED_FIELD_MISSING, INVALID_EMAIL_ADDRESS, …) are permanent for
//     that event, and the dead letter carries Salesforce's error code;
//     UNABLE_TO_LOCK_ROW is retried. 403 REQUEST_LIMIT_EXCEEDED (the org's
//     daily quota) is retried after a minute, every replica paused.
//   - Tasks are upserted on task_key_field (an External ID field on
//     Activity), so a response never gets two.
package salesforce

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/destinations/crm"
	"github.com/closedloop/closedloop/libs/destinations/helpdesk"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Account is one Salesforce org.
type Account struct {
	// crm.Base: name, when, tasks (task or none), unsubscribe_deadline, timeout.
	crm.Base `yaml:",inline"`
	// URL is the org's My Domain (https://acme.my.salesforce.com): its
	// token endpoint.
	URL string `yaml:"url"`
	// APIVersion is the REST API version (default 62.0; at least 46.0).
	APIVersion string `yaml:"api_version"`
	Auth       struct {
		// Flow is client_credentials or jwt_bearer.
		Flow     string `yaml:"flow"`
		ClientID string `yaml:"client_id"`
		// ClientSecret (client_credentials), by reference.
		ClientSecret string `yaml:"client_secret"`
		// Username and PrivateKey (a PEM RSA key, by reference) sign the
		// JWT bearer assertion for Audience (default
		// https://login.salesforce.com; https://test.salesforce.com for a
		// sandbox).
		Username   string `yaml:"username"`
		PrivateKey string `yaml:"private_key"`
		Audience   string `yaml:"audience"`
	} `yaml:"auth"`
	// Objects are searched in order (default [Contact]; add Lead).
	Objects []string `yaml:"objects"`
	// MatchField holds the email on those objects (default Email).
	MatchField string `yaml:"match_field"`
	// Fields renames the feedback fields (field → API name; "" leaves one
	// out). Default Closedloop_<Field>__c (Closedloop_Last_Score__c, …).
	Fields map[string]string `yaml:"fields"`
	// TaskKeyField is the Activity External ID field tasks are upserted on
	// (default Closedloop_Task_Key__c).
	TaskKeyField string `yaml:"task_key_field"`
	// RequestsPerMinute across every replica (default 600).
	RequestsPerMinute int `yaml:"requests_per_minute"`
}

// Kind registers Salesforce with a hosting service.
var Kind = sink.Kind{Name: "salesforce", Instances: instances}

func instances(section *yaml.Node, env sink.KindEnv) ([]sink.Instance, error) {
	return helpdesk.Instances(section, env, func(a Account, env sink.KindEnv) (helpdesk.Opened, error) { return New(a, env) })
}

// MaxBatch is the most records of one collections call.
const MaxBatch = 200

// Destination writes one Salesforce org.
type Destination struct {
	*crm.Engine
	cfg    Account
	client helpdesk.Client
	fields map[string]string // field key → API name
	types  map[string]string // API name → crm field type
	secret []byte            // client secret
	key    *rsa.PrivateKey
	now    func() time.Time

	mu       sync.Mutex
	token    string
	instance string
}

// DefaultField is a field's default API name: Closedloop_Last_Score__c.
func DefaultField(f crm.Field) string {
	parts := strings.Split(f.Key, "_")
	for i, p := range parts {
		parts[i] = strings.ToUpper(p[:1]) + p[1:]
	}
	return "Closedloop_" + strings.Join(parts, "_") + "__c"
}

var objects = map[string]bool{"Contact": true, "Lead": true}

// New builds the destination of an account (Load connects).
func New(a Account, env sink.KindEnv) (*Destination, error) {
	u, err := url.Parse(a.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("url %q: the org's My Domain (https://acme.my.salesforce.com)", a.URL)
	}
	if a.APIVersion == "" {
		a.APIVersion = "62.0"
	}
	if v, err := strconv.ParseFloat(a.APIVersion, 64); err != nil || v < 46 {
		return nil, fmt.Errorf("api_version %q: a version like 62.0, at least 46.0", a.APIVersion)
	}
	if len(a.Objects) == 0 {
		a.Objects = []string{"Contact"}
	}
	for _, o := range a.Objects {
		if !objects[o] {
			return nil, fmt.Errorf("objects: %q is not Contact or Lead", o)
		}
	}
	if a.MatchField == "" {
		a.MatchField = "Email"
	}
	if a.TaskKeyField == "" {
		a.TaskKeyField = "Closedloop_Task_Key__c"
	}
	if a.RequestsPerMinute == 0 {
		a.RequestsPerMinute = 600
	}
	if a.Timeout.Duration == 0 {
		a.Timeout.Duration = 10 * time.Second
	}
	d := &Destination{cfg: a, now: time.Now, types: map[string]string{}}
	if a.Auth.ClientID == "" {
		return nil, errors.New("auth.client_id: the connected app's consumer key")
	}
	credential := a.Auth.ClientID
	switch a.Auth.Flow {
	case "client_credentials":
		s, err := config.ResolveSecret(a.Auth.ClientSecret, env.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("auth.client_secret: %w", err)
		}
		d.secret = s.Reveal()
		credential += string(d.secret)
	case "jwt_bearer":
		if a.Auth.Username == "" {
			return nil, errors.New("auth.username: the user the JWT bearer flow acts as")
		}
		s, err := config.ResolveSecret(a.Auth.PrivateKey, env.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("auth.private_key: %w", err)
		}
		if d.key, err = parseKey(s.Reveal()); err != nil {
			return nil, fmt.Errorf("auth.private_key: %w", err)
		}
		if d.cfg.Auth.Audience == "" {
			d.cfg.Auth.Audience = "https://login.salesforce.com"
		}
		credential += a.Auth.Username + string(s.Reveal())
	default:
		return nil, fmt.Errorf("auth.flow %q: client_credentials or jwt_bearer", a.Auth.Flow)
	}
	if d.client, err = helpdesk.NewClient("salesforce "+a.Name, "", a.URL, a.RequestsPerMinute, a.Timeout.Duration, env); err != nil {
		return nil, err
	}
	if d.fields, err = crm.FieldNames(a.Fields, DefaultField); err != nil {
		return nil, err
	}
	for _, f := range crm.Fields {
		if n, ok := d.fields[f.Key]; ok {
			d.types[n] = f.Type
		}
	}
	d.Engine = crm.NewEngine("salesforce", a.Name, env, d, a.UnsubscribeDeadline.Duration, a.Timeout.Duration, helpdesk.Fingerprint(credential))
	if d.When, err = crm.CompileWhen(a.When); err != nil {
		return nil, err
	}
	if d.Tasks, _, err = a.Tasks.Compile("task"); err != nil {
		return nil, err
	}
	return d, nil
}

func parseKey(b []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not a PEM key")
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, errors.New("not an RSA private key (PKCS#1 or PKCS#8)")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA private key")
	}
	return rk, nil
}

// Load reads the disabled flag and gets a token (so a wrong credential
// shows at start).
func (d *Destination) Load(ctx context.Context) error {
	if err := d.Engine.Load(ctx); err != nil {
		return err
	}
	if _, off := d.Flag.Disabled(); off {
		return nil
	}
	_, _, err := d.session(ctx, true)
	if class, _, _ := sink.Classify(err); err != nil && class == sinkv1.ErrorClass_ERROR_CLASS_RETRYABLE {
		if _, off := d.Flag.Disabled(); off {
			return nil // refused: disabled, with the reason in status
		}
	}
	return err
}

// session is the cached token and instance URL (a new one when fresh).
func (d *Destination) session(ctx context.Context, fresh bool) (string, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.token != "" && !fresh {
		return d.token, d.instance, nil
	}
	form := url.Values{"client_id": {d.cfg.Auth.ClientID}}
	if d.key != nil {
		assertion, err := d.assertion()
		if err != nil {
			return "", "", sink.Permanent(err)
		}
		form = url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
	} else {
		form.Set("grant_type", "client_credentials")
		form.Set("client_secret", string(d.secret))
	}
	if err := d.client.Rate.Wait(ctx); err != nil {
		return "", "", sink.Retryable(err, 0)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(d.cfg.URL, "/")+"/services/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", "", sink.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := d.client.HTTP.Do(req)
	if err != nil {
		return "", "", sink.Retryable(fmt.Errorf("salesforce %s: token: %w", d.cfg.Name, err), 0)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var tok struct {
		AccessToken string `json:"access_token"`
		InstanceURL string `json:"instance_url"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(raw, &tok)
	switch {
	case resp.StatusCode == http.StatusOK && tok.AccessToken != "" && tok.InstanceURL != "":
		d.token, d.instance = tok.AccessToken, strings.TrimRight(tok.InstanceURL, "/")
		return d.token, d.instance, nil
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		msg := fmt.Errorf("salesforce %s: the token endpoint refused the client: %s %s", d.cfg.Name, tok.Error, tok.Description)
		return "", "", helpdesk.Refused(ctx, d.Flag, resp.StatusCode, d.now(), msg)
	}
	return "", "", sink.Retryable(fmt.Errorf("salesforce %s: the token endpoint answered %d: %s", d.cfg.Name, resp.StatusCode, strings.TrimSpace(string(raw[:min(len(raw), 200)]))),
		retry.After(resp.Header.Get("Retry-After"), d.now(), 0))
}

// assertion is the JWT bearer flow's signed assertion (RS256, valid 3 min).
func (d *Destination) assertion() (string, error) {
	enc := base64.RawURLEncoding
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{"iss": d.cfg.Auth.ClientID, "sub": d.cfg.Auth.Username, "aud": d.cfg.Auth.Audience,
		"exp": d.now().Add(3 * time.Minute).Unix()})
	signing := enc.EncodeToString(head) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, d.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

// sfError is one of Salesforce's errors.
type sfError struct {
	Message    string   `json:"message"`
	ErrorCode  string   `json:"errorCode"`
	StatusCode string   `json:"statusCode"`
	Fields     []string `json:"fields"`
}

func (e sfError) code() string {
	if e.ErrorCode != "" {
		return e.ErrorCode
	}
	return e.StatusCode
}

// call is one REST call with the session's token; an expired session is
// renewed once.
func (d *Destination) call(ctx context.Context, method, path string, in, out any) error {
	for attempt := 0; ; attempt++ {
		tok, inst, err := d.session(ctx, false)
		if err != nil {
			return err
		}
		c := d.client
		c.Auth = "Bearer " + tok
		a, err := c.Do(ctx, method, inst+"/services/data/v"+d.cfg.APIVersion+path, nil, in, out)
		if err != nil || a == nil {
			return err
		}
		var errs []sfError
		_ = json.Unmarshal(a.Body, &errs)
		if a.Status == http.StatusUnauthorized && attempt == 0 {
			d.mu.Lock()
			if d.token == tok {
				d.token = "" // INVALID_SESSION_ID: a new token, and this call again
			}
			d.mu.Unlock()
			continue
		}
		return d.classify(ctx, method, path, a, errs)
	}
}

func (d *Destination) classify(ctx context.Context, method, path string, a *helpdesk.Answer, errs []sfError) error {
	var what []string
	limit := false
	for _, e := range errs {
		what = append(what, e.code()+": "+e.Message)
		limit = limit || e.code() == "REQUEST_LIMIT_EXCEEDED"
	}
	if len(what) == 0 {
		what = append(what, strings.TrimSpace(string(a.Body[:min(len(a.Body), 200)])))
	}
	msg := fmt.Errorf("salesforce %s: %s %s answered %d %s: %s", d.cfg.Name, method, strings.SplitN(path, "?", 2)[0], a.Status,
		http.StatusText(a.Status), strings.Join(what, "; "))
	if limit {
		crm.RateLimited(ctx, d.cfg.Name, "daily_quota")
		// The org's API quota for the last 24 hours is spent: every
		// replica waits, then looks again.
		_ = d.client.Rate.Push(ctx, time.Minute)
		return crm.NotApplied(sink.Retryable(msg, time.Minute))
	}
	return d.client.Classify(ctx, a, msg, d.Flag, d.now(), false)
}

type record struct {
	ID     string
	Type   string
	Email  string
	OptOut bool
	At     string // the Feedback At field
}

// soqlQuote quotes a SOQL string literal.
func soqlQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// find returns the records of each email, Contacts first, then the other
// objects for the emails none had.
func (d *Destination) find(ctx context.Context, emails []string) (map[string][]record, error) {
	out := map[string][]record{}
	todo := emails
	at := d.fields[crm.FeedbackAt]
	for _, obj := range d.cfg.Objects {
		for start := 0; start < len(todo); start += 100 {
			chunk := todo[start:min(start+100, len(todo))]
			quoted := make([]string, len(chunk))
			for i, e := range chunk {
				quoted[i] = soqlQuote(e)
			}
			q := "SELECT Id, " + d.cfg.MatchField + ", HasOptedOutOfEmail, " + at + " FROM " + obj + " WHERE " + d.cfg.MatchField + " IN (" + strings.Join(quoted, ", ") + ")"
			var res struct {
				Records []map[string]any `json:"records"`
			}
			if err := d.call(ctx, http.MethodGet, "/query?q="+url.QueryEscape(q), nil, &res); err != nil {
				return nil, err
			}
			for _, r := range res.Records {
				email := strings.ToLower(fmt.Sprint(r[d.cfg.MatchField]))
				rec := record{ID: fmt.Sprint(r["Id"]), Type: obj, Email: email}
				rec.OptOut, _ = r["HasOptedOutOfEmail"].(bool)
				if s, ok := r[at].(string); ok {
					rec.At = s
				}
				out[email] = append(out[email], rec)
			}
		}
		var rest []string
		for _, e := range todo {
			if len(out[e]) == 0 {
				rest = append(rest, e)
			}
		}
		todo = rest
	}
	return out, nil
}

type saveResult struct {
	ID      string    `json:"id"`
	Success bool      `json:"success"`
	Errors  []sfError `json:"errors"`
}

// patch updates records through the collections API; one error per record.
func (d *Destination) patch(ctx context.Context, recs []map[string]any) []error {
	errs := make([]error, len(recs))
	for start := 0; start < len(recs); start += MaxBatch {
		chunk := recs[start:min(start+MaxBatch, len(recs))]
		var res []saveResult
		if err := d.call(ctx, http.MethodPatch, "/composite/sobjects", map[string]any{"allOrNone": false, "records": chunk}, &res); err != nil {
			for i := range chunk {
				errs[start+i] = err
			}
			continue
		}
		for i := range chunk {
			if i >= len(res) {
				errs[start+i] = sink.Retryable(fmt.Errorf("salesforce %s: the answer has no result for record %d", d.cfg.Name, start+i), 0)
				continue
			}
			errs[start+i] = d.recordError(res[i], fmt.Sprint(chunk[i]["Id"]))
		}
	}
	return errs
}

// recordError classifies a record's errors: UNABLE_TO_LOCK_ROW is
// retried; any other is permanent, with Salesforce's code.
func (d *Destination) recordError(r saveResult, id string) error {
	if r.Success {
		return nil
	}
	var what []string
	retryable := len(r.Errors) > 0
	for _, e := range r.Errors {
		what = append(what, e.code()+": "+e.Message)
		retryable = retryable && e.code() == "UNABLE_TO_LOCK_ROW"
	}
	err := fmt.Errorf("salesforce %s: record %s refused: %s", d.cfg.Name, id, strings.Join(what, "; "))
	if retryable {
		return sink.Retryable(err, 0)
	}
	return sink.Permanent(err)
}

// value is a field's JSON value: numbers as numbers.
func (d *Destination) value(name, v string) any {
	if d.types[name] == "number" {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
	}
	return v
}

// Update implements crm.Writer.
func (d *Destination) Update(ctx context.Context, ups []*crm.Update) []error {
	errs := make([]error, len(ups))
	emails := make([]string, len(ups))
	for i, u := range ups {
		emails[i] = u.Email
	}
	found, err := d.find(ctx, emails)
	if err != nil {
		for i := range errs {
			errs[i] = crm.NotApplied(err) // nothing was written yet
		}
		return errs
	}
	var recs []map[string]any
	var owner []int
	for i, u := range ups {
		rs := found[u.Email]
		if len(rs) == 0 {
			errs[i] = crm.ErrUnknownContact
			continue
		}
		u.ID = rs[0].ID
		u.Fields = crm.Values(u.Event.Feedback, d.fields)
		mine := crm.FeedbackTime(u.Event.Feedback)
		for _, r := range rs {
			if t, err := time.Parse(time.RFC3339, strings.Replace(r.At, "+0000", "Z", 1)); err == nil && t.After(mine) {
				continue // the record holds newer feedback (written without this guard's knowledge)
			}
			rec := map[string]any{"attributes": map[string]string{"type": r.Type}, "Id": r.ID}
			for k, v := range u.Fields {
				rec[k] = d.value(k, v)
			}
			recs = append(recs, rec)
			owner = append(owner, i)
		}
	}
	for k, err := range d.patch(ctx, recs) {
		if err != nil && errs[owner[k]] == nil {
			errs[owner[k]] = err
		}
	}
	return errs
}

var sfPriority = map[string]string{"urgent": "High", "high": "High", "normal": "Normal", "low": "Low"}

// Task implements crm.Writer: Tasks upserted on the task key field.
func (d *Destination) Task(ctx context.Context, tasks []*crm.Task) []error {
	errs := make([]error, len(tasks))
	for start := 0; start < len(tasks); start += MaxBatch {
		chunk := tasks[start:min(start+MaxBatch, len(tasks))]
		recs := make([]map[string]any, len(chunk))
		for i, t := range chunk {
			recs[i] = map[string]any{"attributes": map[string]string{"type": "Task"}, d.cfg.TaskKeyField: t.Key, "WhoId": t.Update.ID,
				"Subject": t.Subject, "Description": t.Body, "Status": "Not Started", "Priority": sfPriority[t.Priority],
				"ActivityDate": d.now().UTC().Format("2006-01-02")}
		}
		var res []saveResult
		if err := d.call(ctx, http.MethodPatch, "/composite/sobjects/Task/"+d.cfg.TaskKeyField, map[string]any{"allOrNone": false, "records": recs}, &res); err != nil {
			for i := range chunk {
				errs[start+i] = err
			}
			continue
		}
		for i, t := range chunk {
			if i < len(res) {
				errs[start+i] = d.recordError(res[i], "Task "+t.Key)
			}
		}
	}
	return sink.Errors(errs)
}

// OptOut implements crm.Writer: HasOptedOutOfEmail on every record of
// each email.
func (d *Destination) OptOut(ctx context.Context, outs []*crm.OptOut) ([]crm.Outcome, []error) {
	res := make([]crm.Outcome, len(outs))
	errs := make([]error, len(outs))
	emails := make([]string, len(outs))
	for i, o := range outs {
		emails[i] = o.Email
	}
	found, err := d.find(ctx, emails)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return res, errs
	}
	var recs []map[string]any
	var owner []int
	for i, o := range outs {
		rs := found[o.Email]
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.Type+" "+r.ID)
		}
		res[i].Detail = strings.Join(ids, ", ")
		switch {
		case len(rs) == 0:
			res[i] = crm.Outcome{Result: sinkv1.PropagationResult_PROPAGATION_RESULT_UNKNOWN_CONTACT, Detail: "no " + strings.Join(d.cfg.Objects, " or ") + " with " + d.cfg.MatchField + " " + o.Email}
			continue
		default:
			res[i].Result = sinkv1.PropagationResult_PROPAGATION_RESULT_ALREADY_OPTED_OUT
		}
		for _, r := range rs {
			if r.OptOut {
				continue
			}
			res[i].Result = sinkv1.PropagationResult_PROPAGATION_RESULT_APPLIED
			recs = append(recs, map[string]any{"attributes": map[string]string{"type": r.Type}, "Id": r.ID, "HasOptedOutOfEmail": true})
			owner = append(owner, i)
		}
	}
	for k, err := range d.patch(ctx, recs) {
		if err != nil && errs[owner[k]] == nil {
			errs[owner[k]] = err
		}
	}
	return res, sink.Errors(errs)
}
