// Package hubspot is the HubSpot CRM destination
// (../shared/design/VENDOR_APIS.md §4): the respondent's contact gets the
// feedback properties, a detractor gets a task or note on the contact,
// and an unsubscribe opts the email out of the configured subscription
// type.
//
//   - Contacts are upserted by email in batches of up to 100
//     (POST /crm/v3/objects/contacts/batch/upsert, idProperty=email). A
//     contact is only written with feedback newer than it holds
//     (crm.Guard). A 207 names the inputs HubSpot refused (errors[].context.ids):
//     permanent for those events only; a 400 for a whole batch is retried
//     input by input, so one bad record cannot sink the others.
//   - At start the properties (group "closedloop") are created when
//     missing (Properties API) and logged; with create_properties: false a
//     missing one fails start-up naming it.
//   - Tasks and notes are upserted on the unique property
//     closedloop_task_key (one per response however often it is delivered)
//     and associated with the contact (v4 default association).
//   - Unsubscribes: the contact is looked up by email (unknown: recorded
//     as unknown_contact), its subscription status read (not subscribed:
//     already_opted_out), then POST /communication-preferences/v3/unsubscribe
//     with the configured legal basis. Each outcome is recorded (crm.Recorder).
//   - The app's limit (requests per 10 s) is enforced across replicas in
//     Redis; a 429 (TEN_SECONDLY_ROLLING or DAILY policy) pushes every
//     replica back by Retry-After, else the interval header, else 10 s (a
//     daily limit: 10 minutes). 401 and 403 disable the destination (held,
//     not dead-lettered) until the token is replaced or an operator
//     resumes it. 5xx are retried; other 4xx are permanent for the event.
package hubspot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/destinations/crm"
	"github.com/closedloop/closedloop/libs/destinations/helpdesk"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Account is one HubSpot destination (a portal, through a private app).
type Account struct {
	// crm.Base: name, when, tasks (task, note or none), unsubscribe_deadline, timeout.
	crm.Base `yaml:",inline"`
	// URL is the API's base (default https://api.hubapi.com).
	URL string `yaml:"url"`
	// Token is the private app's access token, by reference (env:…, file:…).
	Token string `yaml:"token"`
	// Properties renames the feedback properties (field → property name;
	// "" leaves a field out). Default closedloop_<field>.
	Properties map[string]string `yaml:"properties"`
	// PropertyGroup holds the created properties (default closedloop).
	PropertyGroup string `yaml:"property_group"`
	// CreateProperties (default true) creates missing properties at start.
	CreateProperties *bool `yaml:"create_properties"`
	// OwnerID owns the tasks and notes (hubspot_owner_id), optional.
	OwnerID string `yaml:"owner_id"`
	// Unsubscribe says which subscription type an opt-out leaves.
	Unsubscribe struct {
		// Subscription is the subscription type's id or name (required).
		Subscription string `yaml:"subscription"`
		// LegalBasis and its explanation, for portals with GDPR on
		// (e.g. LEGITIMATE_INTEREST_CLIENT, NON_GDPR).
		LegalBasis            string `yaml:"legal_basis"`
		LegalBasisExplanation string `yaml:"legal_basis_explanation"`
	} `yaml:"unsubscribe"`
	// RequestsPer10s is the app's limit, shared by every replica (default
	// 100: Free and Starter; 190 on Professional and Enterprise).
	RequestsPer10s int `yaml:"requests_per_10s"`
	// BatchSize is the most contacts per upsert call (default and most 100:
	// HubSpot's documented batch limit, not in its spec).
	BatchSize int `yaml:"batch_size"`
}

// Kind registers HubSpot with a hosting service.
var Kind = sink.Kind{Name: "hubspot", Instances: instances}

func instances(section *yaml.Node, env sink.KindEnv) ([]sink.Instance, error) {
	return helpdesk.Instances(section, env, func(a Account, env sink.KindEnv) (helpdesk.Opened, error) { return New(a, env) })
}

// MaxBatch is HubSpot's most inputs per batch call.
const MaxBatch = 100

// Destination writes one HubSpot account.
type Destination struct {
	*crm.Engine
	cfg          Account
	api          string
	client       helpdesk.Client
	props        map[string]string // field key → property name
	taskObject   string            // "tasks", "notes" or ""
	subscription string            // the resolved subscription type id
	env          sink.KindEnv
	now          func() time.Time
}

// TaskKey is the unique property tasks and notes are upserted on.
const TaskKey = "closedloop_task_key"

// New builds the destination of an account (Load connects).
func New(a Account, env sink.KindEnv) (*Destination, error) {
	if a.URL == "" {
		a.URL = "https://api.hubapi.com"
	}
	if a.PropertyGroup == "" {
		a.PropertyGroup = "closedloop"
	}
	if a.RequestsPer10s == 0 {
		a.RequestsPer10s = 100
	}
	if a.BatchSize == 0 {
		a.BatchSize = MaxBatch
	}
	if a.BatchSize < 1 || a.BatchSize > MaxBatch {
		return nil, fmt.Errorf("batch_size %d: between 1 and %d", a.BatchSize, MaxBatch)
	}
	if a.Timeout.Duration == 0 {
		a.Timeout.Duration = 10 * time.Second
	}
	if a.Token == "" {
		return nil, errors.New("token: the private app's access token, by reference (env:HUBSPOT_TOKEN)")
	}
	tok, err := config.ResolveSecret(a.Token, env.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	if a.Unsubscribe.Subscription == "" {
		return nil, errors.New("unsubscribe.subscription: the subscription type (id or name) an unsubscribe opts the email out of")
	}
	d := &Destination{cfg: a, api: strings.TrimRight(a.URL, "/"), env: env, now: time.Now}
	auth := "Bearer " + string(tok.Reveal())
	if d.client, err = helpdesk.NewClient("hubspot "+a.Name, auth, a.URL, a.RequestsPer10s*6, a.Timeout.Duration, env); err != nil {
		return nil, err
	}
	if d.props, err = crm.FieldNames(a.Properties, func(f crm.Field) string { return "closedloop_" + f.Key }); err != nil {
		return nil, err
	}
	d.Engine = crm.NewEngine("hubspot", a.Name, env, d, a.UnsubscribeDeadline.Duration, a.Timeout.Duration, helpdesk.Fingerprint(auth))
	if d.When, err = crm.CompileWhen(a.When); err != nil {
		return nil, err
	}
	var create string
	if d.Tasks, create, err = a.Tasks.Compile("task", "note"); err != nil {
		return nil, err
	}
	if d.Tasks != nil {
		d.taskObject = create + "s"
	}
	return d, nil
}

// Load reads the disabled flag, creates the missing properties, and
// resolves the subscription type.
func (d *Destination) Load(ctx context.Context) error {
	if err := d.Engine.Load(ctx); err != nil {
		return err
	}
	if _, off := d.Flag.Disabled(); off {
		return nil // the status says why; nothing can be called with this token
	}
	var want []property
	for _, f := range crm.Fields {
		if name, ok := d.props[f.Key]; ok {
			want = append(want, propertyOf(name, f, d.cfg.PropertyGroup))
		}
	}
	create := d.cfg.CreateProperties == nil || *d.cfg.CreateProperties
	if err := d.ensureProperties(ctx, "contacts", want, create); err != nil {
		return err
	}
	if d.taskObject != "" {
		key := property{Name: TaskKey, Label: "closedloop task key", Type: "string", FieldType: "text", GroupName: d.cfg.PropertyGroup, HasUniqueValue: true}
		if err := d.ensureProperties(ctx, d.taskObject, []property{key}, create); err != nil {
			return err
		}
	}
	return d.resolveSubscription(ctx)
}

type property struct {
	Name           string `json:"name"`
	Label          string `json:"label"`
	Type           string `json:"type"`
	FieldType      string `json:"fieldType"`
	GroupName      string `json:"groupName"`
	Description    string `json:"description,omitempty"`
	HasUniqueValue bool   `json:"hasUniqueValue,omitempty"`
}

func propertyOf(name string, f crm.Field, group string) property {
	p := property{Name: name, Label: f.Label, GroupName: group, Description: "Written by closedloop (" + f.Key + ")"}
	switch f.Type {
	case "number":
		p.Type, p.FieldType = "number", "number"
	case "datetime":
		p.Type, p.FieldType = "datetime", "date"
	case "text":
		p.Type, p.FieldType = "string", "textarea"
	default:
		p.Type, p.FieldType = "string", "text"
	}
	return p
}

func (d *Destination) ensureProperties(ctx context.Context, object string, want []property, create bool) error {
	var list struct {
		Results []property `json:"results"`
	}
	if err := d.call(ctx, http.MethodGet, "/crm/v3/properties/"+object, nil, &list); err != nil {
		return fmt.Errorf("reading the %s properties: %w", object, err)
	}
	have := map[string]bool{}
	for _, p := range list.Results {
		have[p.Name] = true
	}
	var missing []property
	for _, p := range want {
		if !have[p.Name] {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !create {
		names := make([]string, len(missing))
		for i, p := range missing {
			names[i] = p.Name
		}
		return fmt.Errorf("the %s properties %s do not exist and create_properties is false: create them (docs/destinations.md) or let closedloop", object, strings.Join(names, ", "))
	}
	group := map[string]any{"name": d.cfg.PropertyGroup, "label": "closedloop", "displayOrder": -1}
	if err := d.call(ctx, http.MethodPost, "/crm/v3/properties/"+object+"/groups", group, nil); err != nil && !isStatus(err, http.StatusConflict) {
		return fmt.Errorf("creating the %s property group %s: %w", object, d.cfg.PropertyGroup, err)
	}
	for _, p := range missing {
		err := d.call(ctx, http.MethodPost, "/crm/v3/properties/"+object, p, nil)
		if err != nil && !isStatus(err, http.StatusConflict) { // 409: another replica made it
			return fmt.Errorf("creating the %s property %s: %w", object, p.Name, err)
		}
		d.env.Log.Info("created a HubSpot property", "destination", d.cfg.Name, "object", object, "property", p.Name, "type", p.Type)
	}
	return nil
}

func (d *Destination) resolveSubscription(ctx context.Context) error {
	var defs struct {
		SubscriptionDefinitions []struct {
			ID       string `json:"id"`
			Name     string `json:"name"`
			IsActive bool   `json:"isActive"`
		} `json:"subscriptionDefinitions"`
	}
	if err := d.call(ctx, http.MethodGet, "/communication-preferences/v3/definitions", nil, &defs); err != nil {
		return fmt.Errorf("reading the subscription types: %w", err)
	}
	var names []string
	for _, s := range defs.SubscriptionDefinitions {
		if s.ID == d.cfg.Unsubscribe.Subscription || strings.EqualFold(s.Name, d.cfg.Unsubscribe.Subscription) {
			d.subscription = s.ID
			return nil
		}
		names = append(names, fmt.Sprintf("%q (%s)", s.Name, s.ID))
	}
	return fmt.Errorf("unsubscribe.subscription %q: no such subscription type (the portal has %s)", d.cfg.Unsubscribe.Subscription, strings.Join(names, ", "))
}

// statusError is a classified answer that keeps its status.
type statusError struct {
	status int
	err    error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func isStatus(err error, status int) bool {
	var s *statusError
	return errors.As(err, &s) && s.status == status
}

// call is one API call; a non-2xx answer is classified.
func (d *Destination) call(ctx context.Context, method, path string, in, out any) error {
	a, err := d.client.Do(ctx, method, d.api+path, nil, in, out)
	if err != nil || a == nil {
		return err
	}
	return &statusError{status: a.Status, err: d.classify(ctx, method, path, a)}
}

// hubspotError is HubSpot's error body.
type hubspotError struct {
	Status     string              `json:"status"`
	Message    string              `json:"message"`
	Category   string              `json:"category"`
	ErrorType  string              `json:"errorType"`
	PolicyName string              `json:"policyName"`
	Context    map[string][]string `json:"context"`
	Errors     []struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"errors"`
}

func (d *Destination) classify(ctx context.Context, method, path string, a *helpdesk.Answer) error {
	var e hubspotError
	_ = json.Unmarshal(a.Body, &e)
	what := strings.TrimSpace(e.Category + " " + e.Message)
	if what == "" {
		what = strings.TrimSpace(string(a.Body[:min(len(a.Body), 200)]))
	}
	msg := fmt.Errorf("hubspot %s: %s %s answered %d %s: %s", d.cfg.Name, method, strings.SplitN(path, "?", 2)[0], a.Status, http.StatusText(a.Status), what)
	now := d.now()
	if a.Status == http.StatusTooManyRequests {
		policy := e.PolicyName
		if policy == "" {
			policy = "unknown"
		}
		crm.RateLimited(ctx, d.cfg.Name, policy)
		after := retry.After(a.Header.Get("Retry-After"), now, 0)
		if after <= 0 && strings.EqualFold(e.PolicyName, "DAILY") {
			after = 10 * time.Minute // the day's calls are spent: look again in a while
		}
		if ms, err := strconv.Atoi(a.Header.Get("X-HubSpot-RateLimit-Interval-Milliseconds")); after <= 0 && err == nil && ms > 0 {
			after = time.Duration(ms) * time.Millisecond
		}
		if after <= 0 {
			after = 10 * time.Second
		}
		_ = d.client.Rate.Push(ctx, after)
		return crm.NotApplied(sink.Retryable(msg, after))
	}
	return d.client.Classify(ctx, a, msg, d.Flag, now, false)
}

type input struct {
	ID         string            `json:"id"`
	IDProperty string            `json:"idProperty"`
	Properties map[string]string `json:"properties"`
}

type batchAnswer struct {
	Status  string `json:"status"`
	Results []struct {
		ID         string            `json:"id"`
		Properties map[string]string `json:"properties"`
	} `json:"results"`
	NumErrors int            `json:"numErrors"`
	Errors    []hubspotError `json:"errors"`
}

// Update implements crm.Writer: batch upserts by email.
func (d *Destination) Update(ctx context.Context, ups []*crm.Update) []error {
	errs := make([]error, len(ups))
	for start := 0; start < len(ups); start += d.cfg.BatchSize {
		chunk := ups[start:min(start+d.cfg.BatchSize, len(ups))]
		copy(errs[start:], d.upsert(ctx, chunk))
	}
	return errs
}

func (d *Destination) upsert(ctx context.Context, ups []*crm.Update) []error {
	errs := make([]error, len(ups))
	inputs := make([]input, len(ups))
	for i, u := range ups {
		u.Fields = crm.Values(u.Event.Feedback, d.props)
		inputs[i] = input{ID: u.Email, IDProperty: "email", Properties: u.Fields}
	}
	var out batchAnswer
	err := d.call(ctx, http.MethodPost, "/crm/v3/objects/contacts/batch/upsert", map[string]any{"inputs": inputs}, &out)
	if err != nil {
		if len(ups) > 1 && isStatus(err, http.StatusBadRequest) {
			// HubSpot refuses a whole batch for one bad input: each alone
			// finds it.
			for i := range ups {
				errs[i] = d.upsert(ctx, ups[i:i+1])[0]
			}
			return errs
		}
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	byEmail := map[string]int{}
	for i, u := range ups {
		byEmail[u.Email] = i
	}
	for _, r := range out.Results {
		if i, ok := byEmail[strings.ToLower(r.Properties["email"])]; ok {
			ups[i].ID = r.ID
		}
	}
	for _, e := range out.Errors {
		for _, id := range e.Context["ids"] {
			if i, ok := byEmail[strings.ToLower(id)]; ok {
				errs[i] = sink.Permanent(fmt.Errorf("hubspot %s: contact %s refused: %s %s", d.cfg.Name, id, e.Category, e.Message))
			}
		}
	}
	for i, u := range ups {
		if errs[i] == nil && u.ID == "" {
			errs[i] = sink.Retryable(fmt.Errorf("hubspot %s: the upsert answered without contact %s", d.cfg.Name, u.Email), 0)
		}
	}
	return errs
}

var hubspotPriority = map[string]string{"urgent": "HIGH", "high": "HIGH", "normal": "MEDIUM", "low": "LOW"}

// Task implements crm.Writer: tasks (or notes) upserted on their key, then
// associated with the contact.
func (d *Destination) Task(ctx context.Context, tasks []*crm.Task) []error {
	errs := make([]error, len(tasks))
	for start := 0; start < len(tasks); start += d.cfg.BatchSize {
		chunk := tasks[start:min(start+d.cfg.BatchSize, len(tasks))]
		inputs := make([]input, len(chunk))
		for i, t := range chunk {
			p := map[string]string{TaskKey: t.Key, "hs_timestamp": d.now().UTC().Format("2006-01-02T15:04:05.000Z")}
			if d.cfg.OwnerID != "" {
				p["hubspot_owner_id"] = d.cfg.OwnerID
			}
			if d.taskObject == "notes" {
				p["hs_note_body"] = t.Subject + "\n\n" + t.Body
			} else {
				p["hs_task_subject"], p["hs_task_body"], p["hs_task_status"], p["hs_task_priority"] = t.Subject, t.Body, "NOT_STARTED", hubspotPriority[t.Priority]
			}
			inputs[i] = input{ID: t.Key, IDProperty: TaskKey, Properties: p}
		}
		var out batchAnswer
		if err := d.call(ctx, http.MethodPost, "/crm/v3/objects/"+d.taskObject+"/batch/upsert", map[string]any{"inputs": inputs}, &out); err != nil {
			for i := range chunk {
				errs[start+i] = err
			}
			continue
		}
		ids := map[string]string{}
		for _, r := range out.Results {
			ids[r.Properties[TaskKey]] = r.ID
		}
		for i, t := range chunk {
			id := ids[t.Key]
			if id == "" {
				errs[start+i] = sink.Retryable(fmt.Errorf("hubspot %s: the %s upsert answered without %s", d.cfg.Name, d.taskObject, t.Key), 0)
				continue
			}
			path := "/crm/v4/objects/" + d.taskObject + "/" + url.PathEscape(id) + "/associations/default/contacts/" + url.PathEscape(t.Update.ID)
			errs[start+i] = d.call(ctx, http.MethodPut, path, nil, nil)
		}
	}
	return sink.Errors(errs)
}

// OptOut implements crm.Writer.
func (d *Destination) OptOut(ctx context.Context, outs []*crm.OptOut) ([]crm.Outcome, []error) {
	res := make([]crm.Outcome, len(outs))
	errs := make([]error, len(outs))
	for i, o := range outs {
		res[i], errs[i] = d.optOut(ctx, o.Email)
		if errs[i] != nil {
			if class, _, _ := sink.Classify(errs[i]); class != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT {
				for j := i + 1; j < len(outs); j++ { // the account is limited or down: the rest wait too
					errs[j] = errs[i]
				}
				break
			}
		}
	}
	return res, sink.Errors(errs)
}

func (d *Destination) optOut(ctx context.Context, email string) (crm.Outcome, error) {
	var contact struct {
		ID string `json:"id"`
	}
	err := d.call(ctx, http.MethodGet, "/crm/v3/objects/contacts/"+url.PathEscape(email)+"?idProperty=email", nil, &contact)
	if isStatus(err, http.StatusNotFound) {
		return crm.Outcome{Result: sinkv1.PropagationResult_PROPAGATION_RESULT_UNKNOWN_CONTACT, Detail: "HubSpot has no contact with this email"}, nil
	}
	if err != nil {
		return crm.Outcome{}, err
	}
	subscribed, err := d.subscribed(ctx, email)
	if err != nil {
		return crm.Outcome{}, err
	}
	detail := "contact " + contact.ID + ", subscription " + d.subscription
	if !subscribed {
		return crm.Outcome{Result: sinkv1.PropagationResult_PROPAGATION_RESULT_ALREADY_OPTED_OUT, Detail: detail}, nil
	}
	req := map[string]any{"emailAddress": email, "subscriptionId": d.subscription}
	if d.cfg.Unsubscribe.LegalBasis != "" {
		req["legalBasis"] = d.cfg.Unsubscribe.LegalBasis
		req["legalBasisExplanation"] = d.cfg.Unsubscribe.LegalBasisExplanation
	}
	err = d.call(ctx, http.MethodPost, "/communication-preferences/v3/unsubscribe", req, nil)
	if isStatus(err, http.StatusBadRequest) {
		// HubSpot answers 400 for an address unsubscribed meanwhile: the
		// status says whether that is what happened.
		if sub, serr := d.subscribed(ctx, email); serr == nil && !sub {
			return crm.Outcome{Result: sinkv1.PropagationResult_PROPAGATION_RESULT_ALREADY_OPTED_OUT, Detail: detail}, nil
		}
	}
	if err != nil {
		return crm.Outcome{}, err
	}
	return crm.Outcome{Result: sinkv1.PropagationResult_PROPAGATION_RESULT_APPLIED, Detail: detail}, nil
}

// subscribed says whether email is subscribed to the subscription type
// (an address without a status is: opting it out is needed).
func (d *Destination) subscribed(ctx context.Context, email string) (bool, error) {
	var st struct {
		SubscriptionStatuses []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"subscriptionStatuses"`
	}
	if err := d.call(ctx, http.MethodGet, "/communication-preferences/v3/status/email/"+url.PathEscape(email), nil, &st); err != nil {
		return false, err
	}
	for _, s := range st.SubscriptionStatuses {
		if s.ID == d.subscription {
			return s.Status != "NOT_SUBSCRIBED", nil
		}
	}
	return true, nil
}
