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

// Delighted lists survey responses (GET /v1/survey_responses.json, the
// person expanded, as webhooks carry it) and then unsubscribes
// (GET /v1/unsubscribes.json), page by page, oldest first, until an empty
// page. Authentication: the API key as the basic-auth user.
type Delighted struct {
	c       client
	perPage int
}

// DelightedOptions configure a Delighted lister.
type DelightedOptions struct {
	// BaseURL (default https://api.delighted.com/v1).
	BaseURL string
	APIKey  string
	// PerPage (default and maximum 100).
	PerPage int
	Limiter *Limiter
	HTTP    *http.Client
}

// NewDelighted returns a lister.
func NewDelighted(o DelightedOptions) (*Delighted, error) {
	if o.APIKey == "" {
		return nil, fault.Errorf(fault.Invalid, "delighted: an API key is required")
	}
	if o.BaseURL == "" {
		o.BaseURL = "https://api.delighted.com/v1"
	}
	if o.PerPage <= 0 || o.PerPage > 100 {
		o.PerPage = 100
	}
	if o.Limiter == nil {
		o.Limiter = NewLimiter(0)
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	key := o.APIKey
	return &Delighted{perPage: o.PerPage, c: client{base: strings.TrimSuffix(o.BaseURL, "/"), http: o.HTTP, limiter: o.Limiter, maxWait: 5 * time.Minute,
		auth: func(r *http.Request) { r.SetBasicAuth(key, "") }}}, nil
}

// delightedItem is what the lister reads of a response or an unsubscribe;
// the item itself is passed on byte for byte.
type delightedItem struct {
	ID             json.RawMessage `json:"id"`
	CreatedAt      json.RawMessage `json:"created_at"`
	UpdatedAt      json.RawMessage `json:"updated_at"`
	PersonID       json.RawMessage `json:"person_id"`
	Email          string          `json:"email"`
	UnsubscribedAt json.RawMessage `json:"unsubscribed_at"`
}

// List implements Lister. The cursor is "responses:<page>" or
// "unsubscribes:<page>".
func (d *Delighted) List(ctx context.Context, w Window, cursor string) (Page, error) {
	kind, page := "responses", 1
	if cursor != "" {
		k, p, ok := strings.Cut(cursor, ":")
		n, err := strconv.Atoi(p)
		if !ok || err != nil || n < 1 || (k != "responses" && k != "unsubscribes") {
			return Page{}, fault.Errorf(fault.Invalid, "delighted: cursor %q is not responses:<page> or unsubscribes:<page>", cursor)
		}
		kind, page = k, n
	}
	q := url.Values{}
	q.Set("per_page", strconv.Itoa(d.perPage))
	q.Set("page", strconv.Itoa(page))
	path := "/unsubscribes.json"
	if kind == "responses" {
		path = "/survey_responses.json"
		q.Set("expand[]", "person")
		if w.ByUpdate {
			q.Set("order", "asc:updated_at")
			setUnix(q, "updated_since", w.Since)
			setUnix(q, "updated_until", w.Until)
		} else {
			setUnix(q, "since", w.Since)
			setUnix(q, "until", w.Until)
		}
	} else {
		setUnix(q, "since", w.Since)
		setUnix(q, "until", w.Until)
	}
	body, err := d.c.get(ctx, path+"?"+q.Encode(), 5)
	if err != nil {
		return Page{}, fmt.Errorf("delighted %s page %d: %w", kind, page, err)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return Page{}, fault.Errorf(fault.Unavailable, "delighted %s page %d: not a JSON array: %v", kind, page, err)
	}
	out := Page{}
	for _, r := range raw {
		var it delightedItem
		if err := json.Unmarshal(r, &it); err != nil {
			return Page{}, fault.Errorf(fault.Unavailable, "delighted %s page %d: %v", kind, page, err)
		}
		item, err := delightedEnvelope(kind, it, r)
		if err != nil {
			return Page{}, fmt.Errorf("delighted %s page %d: %w", kind, page, err)
		}
		out.Items = append(out.Items, item)
	}
	switch {
	case len(raw) > 0:
		out.Next = kind + ":" + strconv.Itoa(page+1)
	case kind == "responses":
		out.Next = "unsubscribes:1"
	}
	return out, nil
}

// delightedEnvelope wraps an API item as the webhook of its latest state:
// survey_response.created while never updated, else .updated;
// unsubscribe.created.
func delightedEnvelope(kind string, it delightedItem, raw json.RawMessage) (Item, error) {
	var typ, id, subject string
	var at int64
	st := feedbackv1.SubjectType_SUBJECT_TYPE_RESPONSE
	switch kind {
	case "responses":
		rid := rawID(it.ID)
		created, _ := unixOf(it.CreatedAt)
		updated, ok := unixOf(it.UpdatedAt)
		if !ok {
			updated = created
		}
		if rid == "" || updated == 0 {
			return Item{}, fault.Errorf(fault.Unavailable, "a survey response without id or time: %s", snippet(raw))
		}
		typ = "survey_response.created"
		if updated != created {
			typ = "survey_response.updated"
		}
		id, at, subject = "api:response:"+rid+":"+strconv.FormatInt(updated, 10), updated, rid
	default:
		pid := rawID(it.PersonID)
		if pid == "" {
			pid = "email:" + strings.ToLower(it.Email)
		}
		unsub, ok := unixOf(it.UnsubscribedAt)
		if !ok {
			return Item{}, fault.Errorf(fault.Unavailable, "an unsubscribe without unsubscribed_at: %s", snippet(raw))
		}
		typ, id, at, subject = "unsubscribe.created", "api:unsubscribe:"+pid+":"+strconv.FormatInt(unsub, 10), unsub, pid
		st = feedbackv1.SubjectType_SUBJECT_TYPE_PERSON
	}
	var b bytes.Buffer
	b.WriteString(`{"event_type":`)
	writeJSONString(&b, typ)
	b.WriteString(`,"event_id":`)
	writeJSONString(&b, id)
	b.WriteString(`,"event_data":`)
	b.Write(raw)
	b.WriteString(`}`)
	t := time.Unix(at, 0).UTC()
	return Item{EventID: id, EventType: typ, Body: b.Bytes(), Subject: strings.TrimPrefix(id, "api:"), At: t,
		SubjectType: st, SubjectID: subject, Version: t}, nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

func setUnix(q url.Values, key string, t time.Time) {
	if !t.IsZero() {
		q.Set(key, strconv.FormatInt(t.Unix(), 10))
	}
}

// rawID reads an id that is a JSON string or number.
func rawID(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return ""
	}
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return str
	}
	return s
}

// unixOf reads unix seconds given as a number or a string.
func unixOf(raw json.RawMessage) (int64, bool) {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	if s == "" || s == "null" {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	return int64(f), true
}
