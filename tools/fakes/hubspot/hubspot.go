// Package hubspotfake is a local HubSpot CRM API for tests and `make run`,
// behaving as HubSpot documents where closedloop depends on it
// (../shared/design/VENDOR_APIS.md §4):
//
//   - auth: a private app's "Authorization: Bearer <token>"; anything else
//     401 {"status":"error","category":"INVALID_AUTHENTICATION",…};
//   - properties: GET/POST /crm/v3/properties/{object} (contacts, notes,
//     tasks) with name, label, type, fieldType and groupName required (400
//     VALIDATION_ERROR), an existing name 409 OBJECT_ALREADY_EXISTS; groups
//     POST /crm/v3/properties/{object}/groups (409 when it exists);
//   - POST /crm/v3/objects/{contacts|notes|tasks}/batch/upsert: at most 100
//     inputs (400), idProperty email (contacts) or a unique property; every
//     property must exist and fit its type (a number, a date time), an email
//     must be valid. A refused input is in errors[] with context.ids (207
//     with the others written, numErrors) — or, with BatchErrors "whole",
//     the whole batch is 400, as HubSpot does for some validation errors;
//   - GET /crm/v3/objects/contacts/{email}?idProperty=email (404 when none);
//   - PUT /crm/v4/objects/{from}/{id}/associations/default/{to}/{toId};
//   - communication preferences v3: GET /definitions, GET
//     /status/email/{email}, POST /unsubscribe {emailAddress,
//     subscriptionId, legalBasis, legalBasisExplanation} — an unknown
//     subscription or an address already unsubscribed 400; with GDPR on a
//     missing legal basis 400;
//   - the app's limit per 10 s (TEN_SECONDLY_ROLLING) and the account's per
//     day (DAILY): 429 {"status":"error","errorType":"RATE_LIMIT",
//     "policyName":…} with the X-HubSpot-RateLimit-* headers on every answer;
//   - failures on command (a status for the requests whose URL or body
//     matches; 400 for a batch input that matches: that input refused),
//     latency on command;
//   - inspection: GET /_fake/contacts, /_fake/unsubscribes, /_fake/stats.
package hubspotfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
)

// Failure answers the next N matching requests with Status.
type Failure = fake.Failure

// Object is a CRM record as the fake keeps it.
type Object struct {
	ID         string            `json:"id"`
	Properties map[string]string `json:"properties"`
	CreatedAt  time.Time         `json:"createdAt"`
	UpdatedAt  time.Time         `json:"updatedAt"`
	// Writes counts the upserts that wrote it; Associations are the
	// contact ids (tasks, notes).
	Writes       int      `json:"writes"`
	Associations []string `json:"associations,omitempty"`
}

// Write is one upsert of a contact, in order.
type Write struct {
	Email      string            `json:"email"`
	Properties map[string]string `json:"properties"`
	At         time.Time         `json:"at"`
}

// Unsubscribe is one opt-out the fake applied.
type Unsubscribe struct {
	Email          string    `json:"email"`
	SubscriptionID string    `json:"subscriptionId"`
	LegalBasis     string    `json:"legalBasis,omitempty"`
	At             time.Time `json:"at"`
}

// Definition is a subscription type.
type Definition struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	IsActive bool   `json:"isActive"`
}

type propDef struct {
	Name           string `json:"name"`
	Label          string `json:"label"`
	Type           string `json:"type"`
	FieldType      string `json:"fieldType"`
	GroupName      string `json:"groupName"`
	HasUniqueValue bool   `json:"hasUniqueValue"`
}

// Server is the fake.
type Server struct {
	// PerTenSeconds is the app's limit (default 100); Daily the account's
	// (0: none).
	PerTenSeconds, Daily int
	// BatchErrors is "multi-status" (default: 207 naming the refused
	// inputs) or "whole" (400 for the batch).
	BatchErrors string
	// GDPR requires a legal basis on unsubscribes.
	GDPR bool
	// Out, when set, gets a line per contact write and opt-out.
	Out io.Writer
	Now func() time.Time

	mu           sync.Mutex
	tokens       map[string]bool
	props        map[string]map[string]propDef // object → name → def
	groups       map[string]map[string]bool
	objects      map[string]map[string]*Object // object → id → record
	unique       map[string]*Object            // object + "\x00" + unique property + "\x00" + value → record
	nextID       int64
	writes       []Write
	defs         []Definition
	statuses     map[string]map[string]string // email → subscription id → status
	unsubscribes []Unsubscribe
	fails        fake.Failures
	window       fake.SecondLimit
	day          int
	dayStart     time.Time
	requests     int
	limited      int
	latency      fake.Latency
}

// New returns a fake with no tokens, the standard properties and two
// subscription types: "Marketing Information" (1001) and "Customer
// Service Communication" (1002).
func New() *Server {
	s := &Server{PerTenSeconds: 100, Now: time.Now, tokens: map[string]bool{}, nextID: 100,
		props: map[string]map[string]propDef{}, groups: map[string]map[string]bool{}, objects: map[string]map[string]*Object{},
		statuses: map[string]map[string]string{}, unique: map[string]*Object{},
		defs: []Definition{{ID: "1001", Name: "Marketing Information", IsActive: true}, {ID: "1002", Name: "Customer Service Communication", IsActive: true}}}
	s.window.Span = 10 * time.Second
	std := map[string][]string{
		"contacts": {"email", "firstname", "lastname", "hs_object_id", "createdate", "lastmodifieddate"},
		"notes":    {"hs_timestamp", "hs_note_body", "hubspot_owner_id"},
		"tasks":    {"hs_timestamp", "hs_task_subject", "hs_task_body", "hs_task_status", "hs_task_priority", "hubspot_owner_id"},
	}
	for obj, names := range std {
		s.props[obj] = map[string]propDef{}
		s.groups[obj] = map[string]bool{obj + "information": true}
		s.objects[obj] = map[string]*Object{}
		for _, n := range names {
			t := "string"
			if n == "hs_timestamp" || n == "createdate" || n == "lastmodifieddate" {
				t = "datetime"
			}
			s.props[obj][n] = propDef{Name: n, Label: n, Type: t, FieldType: "text", GroupName: obj + "information", HasUniqueValue: n == "email"}
		}
	}
	return s
}

// AddToken accepts a private app's token.
func (s *Server) AddToken(tok string) { s.mu.Lock(); s.tokens[tok] = true; s.mu.Unlock() }

// RevokeToken makes a token fail (401).
func (s *Server) RevokeToken(tok string) { s.mu.Lock(); delete(s.tokens, tok); s.mu.Unlock() }

// SetLatency delays every API answer by d.
func (s *Server) SetLatency(d time.Duration) { s.latency.Set(d) }

// Fail queues a failure.
func (s *Server) Fail(f Failure) { s.mu.Lock(); s.fails.Add(f); s.mu.Unlock() }

// ClearFailures drops the queued failures.
func (s *Server) ClearFailures() { s.mu.Lock(); s.fails.Clear(); s.mu.Unlock() }

// AddContact creates a contact (as a person in the CRM before any feedback).
func (s *Server) AddContact(email string, props map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.upsertObject("contacts", "email", strings.ToLower(email), props)
	return o.ID
}

// Contacts returns every contact, keyed by email.
func (s *Server) Contacts() map[string]Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Object{}
	for _, o := range s.objects["contacts"] {
		c := *o
		c.Properties = copyMap(o.Properties)
		out[o.Properties["email"]] = c
	}
	return out
}

// Objects returns the records of an object type (tasks, notes).
func (s *Server) Objects(object string) []Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Object
	for _, o := range s.objects[object] {
		c := *o
		c.Properties = copyMap(o.Properties)
		c.Associations = append([]string(nil), o.Associations...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Writes returns every contact upsert, in order.
func (s *Server) Writes() []Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Write(nil), s.writes...)
}

// Unsubscribes returns the opt-outs applied, in order.
func (s *Server) Unsubscribes() []Unsubscribe {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Unsubscribe(nil), s.unsubscribes...)
}

// Status is an email's status for a subscription type ("" when none).
func (s *Server) Status(email, subscriptionID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statuses[strings.ToLower(email)][subscriptionID]
}

// Stats are the requests served and refused by the rate limits.
type Stats struct {
	Requests      int `json:"requests"`
	RateLimited   int `json:"rate_limited"`
	MaxPer10s     int `json:"max_per_10s"`
	Contacts      int `json:"contacts"`
	ContactWrites int `json:"contact_writes"`
	Unsubscribes  int `json:"unsubscribes"`
}

// Stats returns the counts.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	mx, refused := s.window.Stats()
	return Stats{Requests: s.requests, RateLimited: refused + s.limited, MaxPer10s: mx, Contacts: len(s.objects["contacts"]),
		ContactWrites: len(s.writes), Unsubscribes: len(s.unsubscribes)}
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, category, message string, extra map[string]any) {
	body := map[string]any{"status": "error", "message": message, "correlationId": fmt.Sprintf("fake-%d", time.Now().UnixNano()), "category": category}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, status, body)
}

var (
	propsPath  = regexp.MustCompile(`^/crm/v3/properties/(contacts|notes|tasks)$`)
	groupsPath = regexp.MustCompile(`^/crm/v3/properties/(contacts|notes|tasks)/groups$`)
	upsertPath = regexp.MustCompile(`^/crm/v3/objects/(contacts|notes|tasks)/batch/upsert$`)
	contactGet = regexp.MustCompile(`^/crm/v3/objects/contacts/([^/]+)$`)
	assocPath  = regexp.MustCompile(`^/crm/v4/objects/(notes|tasks)/([^/]+)/associations/default/contacts/([^/]+)$`)
	statusPath = regexp.MustCompile(`^/communication-preferences/v3/status/email/([^/]+)$`)
)

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/readyz":
		w.WriteHeader(http.StatusOK)
		return
	case "/_fake/contacts":
		writeJSON(w, http.StatusOK, s.Contacts())
		return
	case "/_fake/unsubscribes":
		writeJSON(w, http.StatusOK, s.Unsubscribes())
		return
	case "/_fake/stats":
		writeJSON(w, http.StatusOK, s.Stats())
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	s.latency.Wait(r.Context())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !s.tokens[tok] {
		apiError(w, http.StatusUnauthorized, "INVALID_AUTHENTICATION", "Authentication credentials not found. This API supports OAuth 2.0 authentication.", nil)
		return
	}
	if !s.admit(w) {
		return
	}
	var batchFail *Failure
	if f := s.fails.Take(r.URL.String(), body); f != nil {
		if f.Status == http.StatusBadRequest && upsertPath.MatchString(r.URL.Path) {
			batchFail = f // refuses the matching input
		} else {
			if f.Status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", strconv.Itoa(max(f.RetryAfter, 1)))
				apiError(w, f.Status, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.", map[string]any{"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"})
				return
			}
			apiError(w, f.Status, "INTERNAL_ERROR", http.StatusText(f.Status), nil)
			return
		}
	}
	p := r.URL.Path
	switch {
	case propsPath.MatchString(p) && r.Method == http.MethodGet:
		obj := propsPath.FindStringSubmatch(p)[1]
		var out []propDef
		for _, d := range s.props[obj] {
			out = append(out, d)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		writeJSON(w, http.StatusOK, map[string]any{"results": out})
	case propsPath.MatchString(p) && r.Method == http.MethodPost:
		s.createProperty(w, propsPath.FindStringSubmatch(p)[1], body)
	case groupsPath.MatchString(p) && r.Method == http.MethodPost:
		obj := groupsPath.FindStringSubmatch(p)[1]
		var g struct{ Name, Label string }
		if json.Unmarshal(body, &g) != nil || g.Name == "" || g.Label == "" {
			apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "name and label are required", nil)
			return
		}
		if s.groups[obj][g.Name] {
			apiError(w, http.StatusConflict, "OBJECT_ALREADY_EXISTS", "A property group named '"+g.Name+"' already exists.", nil)
			return
		}
		s.groups[obj][g.Name] = true
		writeJSON(w, http.StatusCreated, map[string]any{"name": g.Name, "label": g.Label})
	case upsertPath.MatchString(p) && r.Method == http.MethodPost:
		s.batchUpsert(w, upsertPath.FindStringSubmatch(p)[1], body, batchFail)
	case contactGet.MatchString(p) && r.Method == http.MethodGet:
		id := contactGet.FindStringSubmatch(p)[1]
		o := s.objects["contacts"][id]
		if r.URL.Query().Get("idProperty") == "email" {
			o, _ = s.find("contacts", "email", strings.ToLower(id))
		}
		if o == nil {
			apiError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "resource not found", nil)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": o.ID, "properties": o.Properties, "archived": false})
	case assocPath.MatchString(p) && r.Method == http.MethodPut:
		m := assocPath.FindStringSubmatch(p)
		o, c := s.objects[m[1]][m[2]], s.objects["contacts"][m[3]]
		if o == nil || c == nil {
			apiError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "resource not found", nil)
			return
		}
		if !contains(o.Associations, c.ID) {
			o.Associations = append(o.Associations, c.ID)
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "COMPLETE", "results": []any{map[string]any{"from": map[string]string{"id": o.ID}, "to": map[string]string{"id": c.ID}}}})
	case p == "/communication-preferences/v3/definitions" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"subscriptionDefinitions": s.defs})
	case statusPath.MatchString(p) && r.Method == http.MethodGet:
		email := strings.ToLower(statusPath.FindStringSubmatch(p)[1])
		var st []map[string]any
		for _, d := range s.defs {
			if v := s.statuses[email][d.ID]; v != "" {
				st = append(st, map[string]any{"id": d.ID, "name": d.Name, "status": v, "sourceOfStatus": "SUBSCRIPTION_STATUS"})
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"recipient": email, "subscriptionStatuses": st})
	case p == "/communication-preferences/v3/unsubscribe" && r.Method == http.MethodPost:
		s.unsubscribe(w, body)
	default:
		apiError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "Unable to route "+r.Method+" "+p, nil)
	}
}

// admit applies the limits; the rate headers go on every answer.
func (s *Server) admit(w http.ResponseWriter) bool {
	now := s.Now()
	if now.Sub(s.dayStart) >= 24*time.Hour {
		s.dayStart, s.day = now.Truncate(24*time.Hour), 0
	}
	h := w.Header()
	h.Set("X-HubSpot-RateLimit-Max", strconv.Itoa(s.PerTenSeconds))
	h.Set("X-HubSpot-RateLimit-Interval-Milliseconds", "10000")
	if s.Daily > 0 {
		h.Set("X-HubSpot-RateLimit-Daily", strconv.Itoa(s.Daily))
		h.Set("X-HubSpot-RateLimit-Daily-Remaining", strconv.Itoa(max(0, s.Daily-s.day)))
		if s.day >= s.Daily {
			s.limited++
			apiError(w, http.StatusTooManyRequests, "RATE_LIMITS", "You have reached your daily limit.", map[string]any{"errorType": "RATE_LIMIT", "policyName": "DAILY"})
			return false
		}
	}
	if ok, _ := s.window.Take(now, s.PerTenSeconds); !ok {
		h.Set("X-HubSpot-RateLimit-Remaining", "0")
		apiError(w, http.StatusTooManyRequests, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.", map[string]any{"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"})
		return false
	}
	s.day++
	return true
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

var propTypes = map[string]bool{"string": true, "number": true, "date": true, "datetime": true, "enumeration": true, "bool": true}

func (s *Server) createProperty(w http.ResponseWriter, obj string, body []byte) {
	var d propDef
	if json.Unmarshal(body, &d) != nil || d.Name == "" || d.Label == "" || d.Type == "" || d.FieldType == "" || d.GroupName == "" {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "name, label, type, fieldType and groupName are required", nil)
		return
	}
	if !propTypes[d.Type] {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "type "+d.Type+" is not one of string, number, date, datetime, enumeration, bool", nil)
		return
	}
	if !s.groups[obj][d.GroupName] {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "property group "+d.GroupName+" does not exist", nil)
		return
	}
	if _, ok := s.props[obj][d.Name]; ok {
		apiError(w, http.StatusConflict, "OBJECT_ALREADY_EXISTS", "Property named '"+d.Name+"' already exists.", nil)
		return
	}
	s.props[obj][d.Name] = d
	writeJSON(w, http.StatusCreated, d)
}

type upsertInput struct {
	ID         string            `json:"id"`
	IDProperty string            `json:"idProperty"`
	Properties map[string]string `json:"properties"`
}

// validate is the reason HubSpot refuses an input ("" when it takes it).
func (s *Server) validate(obj string, in upsertInput) string {
	def, ok := s.props[obj][in.IDProperty]
	switch {
	case in.ID == "" || in.IDProperty == "":
		return "id and idProperty are required"
	case !ok || !def.HasUniqueValue:
		return "Unable to perform update/upsert by non-unique property " + in.IDProperty
	}
	if in.IDProperty == "email" {
		if a, err := mail.ParseAddress(in.ID); err != nil || a.Address != in.ID {
			return "Email address " + in.ID + " is invalid"
		}
	}
	for k, v := range in.Properties {
		d, ok := s.props[obj][k]
		if !ok {
			return "Property \"" + k + "\" does not exist"
		}
		switch d.Type {
		case "number":
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				return fmt.Sprintf("%s was not a valid number for property %s", v, k)
			}
		case "datetime", "date":
			if _, err := time.Parse(time.RFC3339, v); err != nil {
				if _, err := strconv.ParseInt(v, 10, 64); err != nil {
					return fmt.Sprintf("%s was not a valid date time for property %s", v, k)
				}
			}
		}
	}
	return ""
}

func (s *Server) batchUpsert(w http.ResponseWriter, obj string, body []byte, fail *Failure) {
	var req struct {
		Inputs []upsertInput `json:"inputs"`
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.Inputs) == 0 {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: inputs are required", nil)
		return
	}
	if len(req.Inputs) > 100 {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Batch input cannot exceed 100 inputs.", nil)
		return
	}
	type refusal struct{ id, why string }
	var refused []refusal
	bad := map[int]bool{}
	for i, in := range req.Inputs {
		why := s.validate(obj, in)
		if why == "" && fail != nil {
			b, _ := json.Marshal(in)
			if strings.Contains(string(b), fail.Match) {
				why = "Injected validation error"
			}
		}
		if why != "" {
			refused = append(refused, refusal{in.ID, why})
			bad[i] = true
		}
	}
	if len(refused) > 0 && s.BatchErrors == "whole" {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Property values were not valid: "+refused[0].why, map[string]any{"context": map[string][]string{"ids": {refused[0].id}}})
		return
	}
	var results []map[string]any
	for i, in := range req.Inputs {
		if bad[i] {
			continue
		}
		_, existed := s.find(obj, in.IDProperty, keyOf(in))
		o := s.upsertObject(obj, in.IDProperty, keyOf(in), in.Properties)
		results = append(results, map[string]any{"id": o.ID, "properties": o.Properties, "createdAt": o.CreatedAt, "updatedAt": o.UpdatedAt, "archived": false, "new": !existed})
	}
	if len(refused) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"status": "COMPLETE", "results": results, "startedAt": s.Now(), "completedAt": s.Now()})
		return
	}
	var errs []map[string]any
	for _, r := range refused {
		errs = append(errs, map[string]any{"status": "error", "category": "VALIDATION_ERROR", "message": r.why, "context": map[string][]string{"ids": {r.id}}})
	}
	writeJSON(w, http.StatusMultiStatus, map[string]any{"status": "COMPLETE", "results": results, "numErrors": len(errs), "errors": errs})
}

func keyOf(in upsertInput) string {
	if in.IDProperty == "email" {
		return strings.ToLower(in.ID)
	}
	return in.ID
}

// find is the record whose unique property prop has val.
func (s *Server) find(obj, prop, val string) (*Object, bool) {
	o, ok := s.unique[obj+"\x00"+prop+"\x00"+val]
	return o, ok
}

func (s *Server) upsertObject(obj, prop, val string, props map[string]string) *Object {
	now := s.Now().UTC()
	o, ok := s.find(obj, prop, val)
	if !ok {
		s.nextID++
		o = &Object{ID: strconv.FormatInt(s.nextID, 10), Properties: map[string]string{prop: val}, CreatedAt: now}
		s.objects[obj][o.ID] = o
		s.unique[obj+"\x00"+prop+"\x00"+val] = o
	}
	for k, v := range props {
		o.Properties[k] = v
	}
	o.Properties["hs_object_id"] = o.ID
	o.UpdatedAt = now
	o.Writes++
	if obj == "contacts" {
		s.writes = append(s.writes, Write{Email: val, Properties: copyMap(props), At: now})
		if s.Out != nil && props["closedloop_last_score"] != "" {
			fmt.Fprintf(s.Out, "  👤 hubspot contact %s: score %s (%s) at %s\n", val, props["closedloop_last_score"], props["closedloop_segment"], props["closedloop_feedback_at"])
		}
	}
	return o
}

func (s *Server) unsubscribe(w http.ResponseWriter, body []byte) {
	var req struct {
		EmailAddress          string `json:"emailAddress"`
		SubscriptionID        string `json:"subscriptionId"`
		LegalBasis            string `json:"legalBasis"`
		LegalBasisExplanation string `json:"legalBasisExplanation"`
	}
	if json.Unmarshal(body, &req) != nil || req.EmailAddress == "" || req.SubscriptionID == "" {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "emailAddress and subscriptionId are required", nil)
		return
	}
	var def *Definition
	for i := range s.defs {
		if s.defs[i].ID == req.SubscriptionID {
			def = &s.defs[i]
		}
	}
	if def == nil {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Subscription "+req.SubscriptionID+" does not exist", nil)
		return
	}
	if s.GDPR && req.LegalBasis == "" {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", "legalBasis is required when GDPR features are on", nil)
		return
	}
	email := strings.ToLower(req.EmailAddress)
	if s.statuses[email][def.ID] == "NOT_SUBSCRIBED" {
		apiError(w, http.StatusBadRequest, "VALIDATION_ERROR", email+" is already unsubscribed from subscription "+def.ID, nil)
		return
	}
	if s.statuses[email] == nil {
		s.statuses[email] = map[string]string{}
	}
	s.statuses[email][def.ID] = "NOT_SUBSCRIBED"
	s.unsubscribes = append(s.unsubscribes, Unsubscribe{Email: email, SubscriptionID: def.ID, LegalBasis: req.LegalBasis, At: s.Now().UTC()})
	if s.Out != nil {
		fmt.Fprintf(s.Out, "  🚫 hubspot %s unsubscribed from %q\n", email, def.Name)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": def.ID, "name": def.Name, "status": "NOT_SUBSCRIBED", "sourceOfStatus": "SUBSCRIPTION_STATUS",
		"legalBasis": req.LegalBasis, "legalBasisExplanation": req.LegalBasisExplanation})
}
