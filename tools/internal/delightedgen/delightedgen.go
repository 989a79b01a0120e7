// Package delightedgen makes realistic, signed Delighted webhooks: survey
// responses (created, then updated with a comment), unsubscribes, and on
// request duplicate deliveries and tampered copies.
package delightedgen

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Webhook is one signed delivery.
type Webhook struct {
	EventID   string
	EventType string
	Subject   string
	Body      []byte
	Signature string
}

// Generator produces webhooks signed with Secret.
type Generator struct {
	Secret []byte
	// Population, when set, gives each response a respondent of that many
	// (person<n>@example.com) instead of the eight fixed people: a
	// benchmark's CRM sees as many contacts as a real account.
	Population int
	rnd        *mrand.Rand
	seq        int
	base       int
	now        func() time.Time
}

// New returns a generator; seed makes the sequence reproducible.
func New(secret []byte, seed uint64) *Generator {
	rnd := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &Generator{Secret: secret, rnd: rnd, base: 100000 + rnd.IntN(899999)*1000, now: time.Now}
}

var people = []struct{ name, email string }{
	{"Anna Müller", "anna.mueller@example.de"}, {"Jörg Schäfer", "joerg.schaefer@example.de"},
	{"Lena Groß", "lena.gross@example.at"}, {"Sam Okafor", "sam.okafor@example.com"},
	{"Priya Nair", "priya.nair@example.in"}, {"Chloé Martin", "chloe.martin@example.fr"},
	{"Mateo García", "mateo.garcia@example.es"}, {"Yuki Tanaka", "yuki.tanaka@example.jp"},
}

// Emails are the generated respondents' emails (the people a CRM knows).
func Emails() []string {
	out := make([]string, len(people))
	for i, p := range people {
		out[i] = p.email
	}
	return out
}

var comments = map[string][]string{
	"detractor": {"Support took three days to answer.", "Zu teuer für das, was es kann.", "The export keeps failing."},
	"passive":   {"Does the job, the UI could be clearer.", "Gut, aber die Ladezeiten…"},
	"promoter":  {"Schnell und zuverlässig — danke!", "Best onboarding we've had.", "Love the Slack alerts."},
}

func segment(score int) string {
	switch {
	case score >= 9:
		return "promoter"
	case score >= 7:
		return "passive"
	}
	return "detractor"
}

func eventID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Sign returns Delighted's signature header value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (g *Generator) envelope(typ string, data any) Webhook {
	id := eventID()
	body, _ := json.Marshal(map[string]any{"event_type": typ, "event_id": id, "event_data": data})
	return Webhook{EventID: id, EventType: typ, Body: body, Signature: Sign(g.Secret, body)}
}

// Response returns a survey_response.created webhook and, with the comment
// added a little later, its survey_response.updated.
func (g *Generator) Response() (created, updated Webhook) {
	g.seq++
	p := g.person()
	score := g.rnd.IntN(11)
	// Response ids must be unique: two responses with one id and one
	// updated_at are the same response version, and dedupe drops the second.
	respID := strconv.Itoa(g.base + g.seq)
	t := g.now().Unix()
	data := map[string]any{
		"id":          respID,
		"person":      map[string]any{"id": strconv.Itoa(5000 + g.rnd.IntN(5000)), "email": p.email, "name": p.name, "created_at": t - 86400},
		"survey_type": "nps", "score": score, "comment": nil,
		"permalink":  "https://app.delighted.com/r/" + respID,
		"created_at": t, "updated_at": t,
		"person_properties": map[string]any{"plan": []string{"free", "team", "enterprise"}[g.rnd.IntN(3)],
			"account": map[string]any{"id": "acct_" + strconv.Itoa(g.rnd.IntN(100)), "region": "eu-central"}, "seats": 5 + g.rnd.IntN(500)},
		"notes": []any{}, "tags": []any{}, "additional_answers": []any{},
	}
	created = g.envelope("survey_response.created", data)
	created.Subject = respID
	cs := comments[segment(score)]
	data["comment"] = cs[g.rnd.IntN(len(cs))]
	data["updated_at"] = t + 1 + int64(g.rnd.IntN(3))
	updated = g.envelope("survey_response.updated", data)
	updated.Subject = respID
	return created, updated
}

// Unsubscribe returns an unsubscribe.created webhook.
func (g *Generator) Unsubscribe() Webhook {
	p := g.person()
	g.seq++
	pid := strconv.Itoa(g.base + g.seq)
	w := g.envelope("unsubscribe.created", map[string]any{"person_id": pid, "email": p.email, "name": p.name, "unsubscribed_at": g.now().Unix()})
	w.Subject = pid
	return w
}

func (g *Generator) person() struct{ name, email string } {
	if g.Population > 0 {
		n := g.rnd.IntN(g.Population)
		return struct{ name, email string }{fmt.Sprintf("Person %d", n), fmt.Sprintf("person%d@example.com", n)}
	}
	return people[g.rnd.IntN(len(people))]
}

// Data is the webhook's event_data: the response (or unsubscribe) as the
// provider's API lists it.
func (w Webhook) Data() (map[string]any, error) {
	var env struct {
		EventData map[string]any `json:"event_data"`
	}
	if err := json.Unmarshal(w.Body, &env); err != nil {
		return nil, err
	}
	if env.EventData == nil {
		return nil, fmt.Errorf("webhook %s has no event_data", w.EventID)
	}
	return env.EventData, nil
}

// Tampered returns w with its body changed after signing (one byte more:
// still valid JSON, no longer what was signed).
func Tampered(w Webhook) Webhook {
	w.Body = append(append([]byte(nil), w.Body...), ' ')
	return w
}

// Send posts w to url and returns the status code.
func Send(ctx context.Context, c *http.Client, url string, w Webhook) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(w.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Delighted-Webhooks/1.0 (closedloop generator)")
	req.Header.Set("X-Delighted-Webhook-Signature", w.Signature)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// IngestToken returns a random URL token with 192 bits of randomness.
func IngestToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "tok_" + hex.EncodeToString(b)
}

// String describes w for logs.
func (w Webhook) String() string {
	return fmt.Sprintf("%s %s subject=%s", w.EventType, w.EventID[:12], w.Subject)
}
