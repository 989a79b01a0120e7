package pull

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/closedloop/closedloop/libs/fault"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Typeform lists the responses of the configured forms
// (GET /forms/{form_id}/responses), newest first within the window, a page
// at a time: the next page is asked for with before=<the token of the last
// item>, which pages in the order Typeform processed the responses without
// repeating one. since and until are inclusive: an item exactly at a window
// boundary comes again in the next window, and its deterministic event id
// (and subject version) makes it the same event, not a second one.
// Authentication: a personal access token (responses:read) as bearer.
type Typeform struct {
	c        client
	forms    []string
	pageSize int
	// passes are the response types listed, one pass each (a page of
	// mixed types would not page consistently: partial responses have no
	// submission time to order by).
	passes []string
}

// TypeformOptions configure a Typeform lister.
type TypeformOptions struct {
	// BaseURL (default https://api.typeform.com; EU accounts use theirs).
	BaseURL string
	Token   string
	// Forms are the form ids whose responses are listed.
	Forms []string
	// PageSize (default and maximum 1000).
	PageSize int
	// Partial also lists partial responses (response_type=partial,completed);
	// by default only completed ones.
	Partial bool
	Limiter *Limiter
	HTTP    *http.Client
}

// NewTypeform returns a lister.
func NewTypeform(o TypeformOptions) (*Typeform, error) {
	switch {
	case o.Token == "":
		return nil, fault.Errorf(fault.Invalid, "typeform: a personal access token is required")
	case len(o.Forms) == 0:
		return nil, fault.Errorf(fault.Invalid, "typeform: at least one form id is required")
	}
	if o.BaseURL == "" {
		o.BaseURL = "https://api.typeform.com"
	}
	if o.PageSize <= 0 || o.PageSize > 1000 {
		o.PageSize = 1000
	}
	if o.Limiter == nil {
		o.Limiter = NewLimiter(0)
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	passes := []string{"completed"}
	if o.Partial {
		passes = append(passes, "partial")
	}
	tok := o.Token
	return &Typeform{forms: o.Forms, pageSize: o.PageSize, passes: passes,
		c: client{base: strings.TrimSuffix(o.BaseURL, "/"), http: o.HTTP, limiter: o.Limiter, maxWait: 5 * time.Minute,
			auth: func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }}}, nil
}

type tfPage struct {
	TotalItems int               `json:"total_items"`
	PageCount  int               `json:"page_count"`
	Items      []json.RawMessage `json:"items"`
}

type tfItem struct {
	Token       string `json:"token"`
	ResponseID  string `json:"response_id"`
	LandedAt    string `json:"landed_at"`
	SubmittedAt string `json:"submitted_at"`
}

// List implements Lister. The cursor is "<form index>:<pass>:<before
// token>".
func (t *Typeform) List(ctx context.Context, w Window, cursor string) (Page, error) {
	form, pass, before := 0, 0, ""
	if cursor != "" {
		parts := strings.SplitN(cursor, ":", 3)
		var n, m int
		var err1, err2 error
		if len(parts) == 3 {
			n, err1 = strconv.Atoi(parts[0])
			m, err2 = strconv.Atoi(parts[1])
		}
		if len(parts) != 3 || err1 != nil || err2 != nil || n < 0 || n >= len(t.forms) || m < 0 || m >= len(t.passes) {
			return Page{}, fault.Errorf(fault.Invalid, "typeform: cursor %q is not <form index>:<pass>:<token> of %d forms and %d passes", cursor, len(t.forms), len(t.passes))
		}
		form, pass, before = n, m, parts[2]
	}
	id := t.forms[form]
	q := url.Values{}
	q.Set("page_size", strconv.Itoa(t.pageSize))
	q.Set("response_type", t.passes[pass])
	if !w.Since.IsZero() {
		q.Set("since", strconv.FormatInt(w.Since.Unix(), 10))
	}
	if !w.Until.IsZero() {
		q.Set("until", strconv.FormatInt(w.Until.Unix(), 10))
	}
	if before != "" {
		q.Set("before", before)
	}
	body, err := t.c.get(ctx, "/forms/"+url.PathEscape(id)+"/responses?"+q.Encode(), 5)
	if err != nil {
		return Page{}, fmt.Errorf("typeform form %s: %w", id, err)
	}
	var p tfPage
	if err := json.Unmarshal(body, &p); err != nil {
		return Page{}, fault.Errorf(fault.Unavailable, "typeform form %s: not a responses page: %v", id, err)
	}
	out := Page{}
	for _, raw := range p.Items {
		item, err := TypeformItem(id, raw)
		if err != nil {
			return Page{}, fmt.Errorf("typeform form %s: %w", id, err)
		}
		out.Items = append(out.Items, item)
	}
	switch {
	case len(p.Items) > 0 && len(p.Items) >= t.pageSize:
		var last tfItem
		_ = json.Unmarshal(p.Items[len(p.Items)-1], &last)
		out.Next = strconv.Itoa(form) + ":" + strconv.Itoa(pass) + ":" + last.Token
	case pass+1 < len(t.passes):
		out.Next = strconv.Itoa(form) + ":" + strconv.Itoa(pass+1) + ":"
	case form+1 < len(t.forms):
		out.Next = strconv.Itoa(form+1) + ":0:"
	}
	return out, nil
}

// TypeformItem wraps an item of form's responses listing as the webhook
// Typeform sends for it:
// {event_id, event_type: form_response (or form_response_partial),
// form_response: {form_id, token, landed_at, submitted_at, hidden,
// calculated, variables, answers, metadata}}.
func TypeformItem(form string, raw json.RawMessage) (Item, error) {
	var it tfItem
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &it); err != nil {
		return Item{}, fault.Errorf(fault.Unavailable, "a response that is not an object: %v", err)
	}
	_ = json.Unmarshal(raw, &fields)
	token := it.Token
	if token == "" {
		token = it.ResponseID
	}
	if token == "" {
		return Item{}, fault.Errorf(fault.Unavailable, "a response without token: %s", snippet(raw))
	}
	typ, when := "form_response", it.SubmittedAt
	if when == "" || strings.HasPrefix(when, "0001-") {
		typ, when = "form_response_partial", it.LandedAt
	}
	at, err := time.Parse(time.RFC3339, when)
	if err != nil {
		return Item{}, fault.Errorf(fault.Unavailable, "response %s: time %q: %v", token, when, err)
	}
	id := "api:typeform:" + token + ":" + strconv.FormatInt(at.Unix(), 10)
	var b bytes.Buffer
	b.WriteString(`{"event_id":`)
	writeJSONString(&b, id)
	b.WriteString(`,"event_type":`)
	writeJSONString(&b, typ)
	b.WriteString(`,"form_response":{"form_id":`)
	writeJSONString(&b, form)
	b.WriteString(`,"token":`)
	writeJSONString(&b, token)
	for _, k := range []string{"landed_at", "submitted_at", "hidden", "calculated", "variables", "answers", "metadata"} {
		if v, ok := fields[k]; ok {
			b.WriteString(`,"` + k + `":`)
			b.Write(v)
		}
	}
	b.WriteString(`}}`)
	return Item{EventID: id, EventType: typ, Body: b.Bytes(), Subject: "response " + token, At: at.UTC(),
		SubjectType: feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE, SubjectID: token, Version: at.UTC()}, nil
}
