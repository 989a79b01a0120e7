// Package salesforcefake is a local Salesforce org for tests and `make
// run`, behaving as Salesforce documents where closedloop depends on it
// (../shared/design/VENDOR_APIS.md §5):
//
//   - POST /services/oauth2/token (form): grant_type client_credentials
//     (client_id, client_secret) or urn:ietf:params:oauth:grant-type:jwt-bearer
//     (an RS256 assertion verified with the connected app's certificate:
//     iss the client id, sub a known username, aud, exp within 3 minutes) →
//     {access_token, instance_url, id, token_type, issued_at, signature};
//     else 400 {error: invalid_client | invalid_grant, error_description};
//   - every REST call needs a current token: else 401
//     [{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]
//     (ExpireTokens expires them all, as a session timeout does);
//   - GET /services/data/vXX.X/query?q= — SELECT fields FROM Contact|Lead|Task
//     WHERE field IN ('a', …) or = 'a' (string literals with \' escapes);
//   - PATCH /services/data/vXX.X/composite/sobjects {allOrNone, records}
//     updates by Id (≤ 200 records, else 400 EXCEEDED_ID_LIMIT): one result
//     per record in order, {id, success, errors[{statusCode, message,
//     fields}]}; an unknown field is INVALID_FIELD, a record matching an
//     injected 400 FIELD_CUSTOM_VALIDATION_EXCEPTION; allOrNone true rolls
//     the others back (ALL_OR_NONE_OPERATION_ROLLED_BACK);
//   - PATCH …/composite/sobjects/{SObject}/{ExternalIdField} upserts
//     (created true/false);
//   - the org's daily API quota: Sforce-Limit-Info: api-usage=n/max on
//     every answer, 403 [{"errorCode":"REQUEST_LIMIT_EXCEEDED"}] past it;
//   - failures on command, latency on command;
//   - inspection: GET /_fake/records?type=Contact, /_fake/stats.
package salesforcefake

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/closedloop/closedloop/tools/fakes/internal/fake"
)

// Failure answers the next N matching requests with Status (400 on a
// collections call: the matching records fail validation).
type Failure = fake.Failure

// Record is an sObject record.
type Record map[string]any

// Server is the fake org.
type Server struct {
	// ClientID and ClientSecret are the connected app's; Users may log in
	// by JWT bearer, signed by Key's private half.
	ClientID, ClientSecret string
	Users                  map[string]bool
	Key                    *rsa.PublicKey
	// DailyLimit is the org's API requests per 24 hours (0: none).
	DailyLimit int
	// Out, when set, gets a line per record update.
	Out io.Writer
	// URL is the instance URL the tokens name (the server's own).
	URL string
	Now func() time.Time

	mu       sync.Mutex
	tokens   map[string]bool
	records  map[string]map[string]Record // type → id → record
	fields   map[string]map[string]bool   // type → field names
	nextID   int
	used     int
	requests int
	writes   []Record
	fails    fake.Failures
	latency  fake.Latency
}

// Fields of the standard objects, plus closedloop's custom fields.
var custom = []string{"Closedloop_Last_Score__c", "Closedloop_Score_Scale__c", "Closedloop_Segment__c", "Closedloop_Survey__c",
	"Closedloop_Comment__c", "Closedloop_Feedback_At__c", "Closedloop_Response_Link__c", "Closedloop_Account_Tier__c", "Closedloop_Event_Id__c"}

// New returns an org with the connected app's id and secret.
func New(clientID, clientSecret string) *Server {
	s := &Server{ClientID: clientID, ClientSecret: clientSecret, Users: map[string]bool{}, Now: time.Now,
		tokens: map[string]bool{}, records: map[string]map[string]Record{}, fields: map[string]map[string]bool{}}
	for obj, fs := range map[string][]string{
		"Contact": append([]string{"Id", "Email", "FirstName", "LastName", "HasOptedOutOfEmail", "AccountId"}, custom...),
		"Lead":    append([]string{"Id", "Email", "FirstName", "LastName", "Company", "HasOptedOutOfEmail"}, custom...),
		"Task":    {"Id", "WhoId", "Subject", "Description", "Status", "Priority", "ActivityDate", "Closedloop_Task_Key__c"},
	} {
		s.records[obj] = map[string]Record{}
		s.fields[obj] = map[string]bool{}
		for _, f := range fs {
			s.fields[obj][f] = true
		}
	}
	return s
}

var prefixes = map[string]string{"Contact": "003", "Lead": "00Q", "Task": "00T"}

// Add creates a record (a Contact or Lead that exists before feedback).
func (s *Server) Add(object string, fields Record) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add(object, fields)
}

func (s *Server) add(object string, fields Record) string {
	s.nextID++
	id := fmt.Sprintf("%s%012dAAA", prefixes[object], s.nextID)
	r := Record{"Id": id, "HasOptedOutOfEmail": false}
	if object == "Task" {
		r = Record{"Id": id}
	}
	for k, v := range fields {
		r[k] = v
	}
	s.records[object][id] = r
	return id
}

// Records returns a copy of every record of an object.
func (s *Server) Records(object string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, r := range s.records[object] {
		c := Record{}
		for k, v := range r {
			c[k] = v
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]["Id"]) < fmt.Sprint(out[j]["Id"]) })
	return out
}

// Writes are the record updates applied, in order (the fields sent).
func (s *Server) Writes() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.writes...)
}

// ExpireTokens ends every session (401 INVALID_SESSION_ID until a new token).
func (s *Server) ExpireTokens() { s.mu.Lock(); s.tokens = map[string]bool{}; s.mu.Unlock() }

// Fail queues a failure.
func (s *Server) Fail(f Failure) { s.mu.Lock(); s.fails.Add(f); s.mu.Unlock() }

// ClearFailures drops the queued failures.
func (s *Server) ClearFailures() { s.mu.Lock(); s.fails.Clear(); s.mu.Unlock() }

// SetLatency delays every answer.
func (s *Server) SetLatency(d time.Duration) { s.latency.Set(d) }

// Stats are the API requests served and the quota used.
type Stats struct {
	Requests   int `json:"requests"`
	APIUsage   int `json:"api_usage"`
	Contacts   int `json:"contacts"`
	Leads      int `json:"leads"`
	Tasks      int `json:"tasks"`
	OptedOut   int `json:"opted_out"`
	Writes     int `json:"writes"`
	DailyLimit int `json:"daily_limit"`
}

// Stats returns the counts.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Requests: s.requests, APIUsage: s.used, Contacts: len(s.records["Contact"]), Leads: len(s.records["Lead"]),
		Tasks: len(s.records["Task"]), Writes: len(s.writes), DailyLimit: s.DailyLimit}
	for _, obj := range []string{"Contact", "Lead"} {
		for _, r := range s.records[obj] {
			if r["HasOptedOutOfEmail"] == true {
				st.OptedOut++
			}
		}
	}
	return st
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func sfErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, []map[string]any{{"message": msg, "errorCode": code}})
}

var (
	versioned = regexp.MustCompile(`^/services/data/v\d+\.\d+(/.*)$`)
	upsertRe  = regexp.MustCompile(`^/composite/sobjects/(\w+)/(\w+)$`)
	soqlRe    = regexp.MustCompile(`(?is)^\s*SELECT\s+(.+?)\s+FROM\s+(\w+)\s+WHERE\s+(\w+)\s+(?:IN\s*\((.*)\)|=\s*('(?:[^'\\]|\\.)*'))\s*$`)
	literalRe = regexp.MustCompile(`'((?:[^'\\]|\\.)*)'`)
)

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/readyz":
		w.WriteHeader(http.StatusOK)
		return
	case "/_fake/records":
		writeJSON(w, http.StatusOK, s.Records(r.URL.Query().Get("type")))
		return
	case "/_fake/stats":
		writeJSON(w, http.StatusOK, s.Stats())
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	s.latency.Wait(r.Context())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if r.URL.Path == "/services/oauth2/token" && r.Method == http.MethodPost {
		s.token(w, r, body)
		return
	}
	m := versioned.FindStringSubmatch(r.URL.Path)
	if m == nil {
		sfErr(w, http.StatusNotFound, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !s.tokens[tok] {
		sfErr(w, http.StatusUnauthorized, "INVALID_SESSION_ID", "Session expired or invalid")
		return
	}
	s.used++
	w.Header().Set("Sforce-Limit-Info", fmt.Sprintf("api-usage=%d/%d", s.used, max(s.DailyLimit, 15000)))
	if s.DailyLimit > 0 && s.used > s.DailyLimit {
		sfErr(w, http.StatusForbidden, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
		return
	}
	var invalid *Failure
	if f := s.fails.Take(r.URL.String(), body); f != nil {
		if f.Status == http.StatusBadRequest && r.Method == http.MethodPatch {
			invalid = f
		} else {
			if f.Status == http.StatusForbidden {
				sfErr(w, f.Status, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
				return
			}
			if f.RetryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
			}
			sfErr(w, f.Status, "SERVER_UNAVAILABLE", http.StatusText(f.Status))
			return
		}
	}
	path := m[1]
	switch {
	case path == "/query" && r.Method == http.MethodGet:
		s.query(w, r.URL.Query().Get("q"))
	case path == "/composite/sobjects" && r.Method == http.MethodPatch:
		s.collection(w, body, "", "", invalid)
	case upsertRe.MatchString(path) && r.Method == http.MethodPatch:
		u := upsertRe.FindStringSubmatch(path)
		s.collection(w, body, u[1], u[2], invalid)
	default:
		sfErr(w, http.StatusNotFound, "NOT_FOUND", "The requested resource does not exist")
	}
}

func (s *Server) token(w http.ResponseWriter, r *http.Request, body []byte) {
	form, _ := url.ParseQuery(string(body))
	refuse := func(code, desc string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": code, "error_description": desc})
	}
	switch form.Get("grant_type") {
	case "client_credentials":
		if form.Get("client_id") != s.ClientID || form.Get("client_secret") != s.ClientSecret || s.ClientSecret == "" {
			refuse("invalid_client", "invalid client credentials")
			return
		}
	case "urn:ietf:params:oauth:grant-type:jwt-bearer":
		if why := s.verify(form.Get("assertion")); why != "" {
			refuse("invalid_grant", why)
			return
		}
	default:
		refuse("unsupported_grant_type", "grant type not supported")
		return
	}
	s.nextID++
	tok := fmt.Sprintf("00Dfake!%d.%d", s.Now().UnixNano(), s.nextID)
	s.tokens[tok] = true
	inst := s.URL
	if inst == "" {
		inst = "http://" + r.Host
	}
	writeJSON(w, http.StatusOK, map[string]string{"access_token": tok, "instance_url": inst, "id": inst + "/id/00Dfake/005fake",
		"token_type": "Bearer", "issued_at": strconv.FormatInt(s.Now().UnixMilli(), 10), "signature": "fake"})
}

// verify checks a JWT bearer assertion ("" when good).
func (s *Server) verify(assertion string) string {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 || s.Key == nil {
		return "invalid assertion"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || rsa.VerifyPKCS1v15(s.Key, crypto.SHA256, sum[:], sig) != nil {
		return "invalid assertion signature"
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Iss, Sub, Aud string
		Exp           int64
	}
	if json.Unmarshal(raw, &c) != nil {
		return "invalid assertion"
	}
	now := s.Now().Unix()
	switch {
	case c.Iss != s.ClientID:
		return "invalid client identifier"
	case !s.Users[c.Sub]:
		return "user hasn't approved this consumer"
	case c.Aud != "https://login.salesforce.com" && c.Aud != "https://test.salesforce.com":
		return "audience is invalid"
	case c.Exp < now || c.Exp > now+5*60:
		return "expired authorization code"
	}
	return ""
}

func (s *Server) query(w http.ResponseWriter, q string) {
	m := soqlRe.FindStringSubmatch(q)
	if m == nil {
		sfErr(w, http.StatusBadRequest, "MALFORMED_QUERY", "unexpected token in "+q)
		return
	}
	obj, field := m[2], m[3]
	if s.fields[obj] == nil {
		sfErr(w, http.StatusBadRequest, "INVALID_TYPE", "sObject type '"+obj+"' is not supported.")
		return
	}
	var sel []string
	for _, f := range strings.Split(m[1], ",") {
		f = strings.TrimSpace(f)
		if !s.fields[obj][f] {
			sfErr(w, http.StatusBadRequest, "INVALID_FIELD", "No such column '"+f+"' on entity '"+obj+"'.")
			return
		}
		sel = append(sel, f)
	}
	if !s.fields[obj][field] {
		sfErr(w, http.StatusBadRequest, "INVALID_FIELD", "No such column '"+field+"' on entity '"+obj+"'.")
		return
	}
	want := map[string]bool{}
	for _, lit := range literalRe.FindAllStringSubmatch(m[4]+m[5], -1) {
		want[strings.ToLower(strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(lit[1]))] = true
	}
	var out []map[string]any
	for _, r := range s.records[obj] {
		if v, ok := r[field].(string); ok && want[strings.ToLower(v)] {
			rec := map[string]any{"attributes": map[string]string{"type": obj, "url": "/services/data/v62.0/sobjects/" + obj + "/" + fmt.Sprint(r["Id"])}}
			for _, f := range sel {
				rec[f] = r[f]
			}
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]["Id"]) < fmt.Sprint(out[j]["Id"]) })
	writeJSON(w, http.StatusOK, map[string]any{"totalSize": len(out), "done": true, "records": out})
}

type result struct {
	ID      string           `json:"id,omitempty"`
	Success bool             `json:"success"`
	Created *bool            `json:"created,omitempty"`
	Errors  []map[string]any `json:"errors"`
}

func recErr(code, msg string, fields ...string) []map[string]any {
	if fields == nil {
		fields = []string{}
	}
	return []map[string]any{{"statusCode": code, "message": msg, "fields": fields}}
}

// collection updates (extField "") or upserts records.
func (s *Server) collection(w http.ResponseWriter, body []byte, upsertType, extField string, invalid *Failure) {
	var req struct {
		AllOrNone bool             `json:"allOrNone"`
		Records   []map[string]any `json:"records"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Records == nil {
		sfErr(w, http.StatusBadRequest, "JSON_PARSER_ERROR", "records are required")
		return
	}
	if len(req.Records) > 200 {
		sfErr(w, http.StatusBadRequest, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
		return
	}
	results := make([]result, len(req.Records))
	type change struct {
		obj, id string
		fields  map[string]any
		created bool
	}
	changes := make([]*change, len(req.Records))
	failed := false
	for i, rec := range req.Records {
		attrs, _ := rec["attributes"].(map[string]any)
		obj, _ := attrs["type"].(string)
		if upsertType != "" && obj != upsertType {
			results[i] = result{Errors: recErr("INVALID_TYPE", "every record must be of type "+upsertType)}
			failed = true
			continue
		}
		if s.fields[obj] == nil {
			results[i] = result{Errors: recErr("INVALID_TYPE", "sObject type '"+obj+"' is not supported")}
			failed = true
			continue
		}
		fields := map[string]any{}
		bad := ""
		for k, v := range rec {
			if k == "attributes" || k == "Id" {
				continue
			}
			if !s.fields[obj][k] {
				bad = k
				break
			}
			fields[k] = v
		}
		if bad != "" {
			results[i] = result{Errors: recErr("INVALID_FIELD", "No such column '"+bad+"' on sobject of type "+obj, bad)}
			failed = true
			continue
		}
		if invalid != nil {
			b, _ := json.Marshal(rec)
			if strings.Contains(string(b), invalid.Match) {
				results[i] = result{Errors: recErr("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Injected validation rule: the record is refused")}
				failed = true
				continue
			}
		}
		c := &change{obj: obj, fields: fields}
		if extField != "" {
			key, _ := rec[extField].(string)
			if key == "" {
				results[i] = result{Errors: recErr("REQUIRED_FIELD_MISSING", "Required fields are missing: ["+extField+"]", extField)}
				failed = true
				continue
			}
			for id, r := range s.records[obj] {
				if r[extField] == key {
					c.id = id
				}
			}
			c.created = c.id == ""
		} else {
			id, _ := rec["Id"].(string)
			if s.records[obj][id] == nil {
				results[i] = result{Errors: recErr("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", "Id")}
				failed = true
				continue
			}
			c.id = id
		}
		changes[i] = c
	}
	for i, c := range changes {
		if c == nil {
			continue
		}
		if req.AllOrNone && failed {
			results[i] = result{ID: c.id, Errors: recErr("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid and the request was using AllOrNone header")}
			continue
		}
		if c.created {
			c.id = s.add(c.obj, nil)
		}
		r := s.records[c.obj][c.id]
		for k, v := range c.fields {
			r[k] = v
		}
		wr := Record{"Id": c.id, "type": c.obj}
		for k, v := range c.fields {
			wr[k] = v
		}
		s.writes = append(s.writes, wr)
		if s.Out != nil {
			switch {
			case c.fields["HasOptedOutOfEmail"] == true:
				fmt.Fprintf(s.Out, "  🚫 salesforce %s %s (%v) opted out of email\n", c.obj, c.id, r["Email"])
			case c.fields["Closedloop_Last_Score__c"] != nil:
				fmt.Fprintf(s.Out, "  👤 salesforce %s %s (%v): score %v (%v) at %v\n", c.obj, c.id, r["Email"], c.fields["Closedloop_Last_Score__c"], c.fields["Closedloop_Segment__c"], c.fields["Closedloop_Feedback_At__c"])
			case c.obj == "Task":
				fmt.Fprintf(s.Out, "  📋 salesforce Task %s for %v: %v\n", c.id, r["WhoId"], r["Subject"])
			}
		}
		res := result{ID: c.id, Success: true, Errors: []map[string]any{}}
		if extField != "" {
			created := c.created
			res.Created = &created
		}
		results[i] = res
	}
	writeJSON(w, http.StatusOK, results)
}
