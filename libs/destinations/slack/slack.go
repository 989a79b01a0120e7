// Package slack is the Slack destination: detractor alerts (or whatever the
// channel's `when` rule selects) as Block Kit messages, through an incoming
// webhook or chat.postMessage with a bot token.
//
// Slack allows about one message per second per channel (short bursts),
// answering 429 with Retry-After past it: the limit is enforced across every
// replica in Redis, and a 429 pushes every replica back. When a backlog
// builds (an outage, a flood), the events waiting are collapsed into one
// digest message ("37 detractors from 14:02 to 14:07: …") instead of
// posting one a second for an hour. Slack has no idempotency key: each
// posted message is checkpointed the moment Slack accepts it.
//
// Errors (../shared/design/VENDOR_APIS.md): 429, 5xx, ratelimited,
// internal_error, service_unavailable and request_timeout are retryable;
// invalid_payload, channel_not_found, no_text, invalid_blocks, msg_too_long,
// not_in_channel, invalid_auth and the like are permanent for the event;
// channel_is_archived (410) and is_archived disable the destination until
// an operator resumes it (closedloopctl resume), dead-lettering meanwhile.
package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/expr"
	"github.com/closedloop/closedloop/libs/retry"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Config is the `sinks.slack` section of the pipeline file.
type Config struct {
	Channels []Channel `yaml:"channels"`
}

// Channel is one Slack destination.
type Channel struct {
	// Name identifies the destination (status, pause, dead letters, its
	// consumer group): lower-case letters, digits and '-'.
	Name string `yaml:"name"`
	// WebhookURL is a secret reference (env:NAME or file:PATH) to an
	// incoming webhook URL (the URL is the credential).
	WebhookURL string `yaml:"webhook_url"`
	// Token is a secret reference to a bot token (xoxb-…) for
	// chat.postMessage to Channel; API is its base URL (default
	// https://slack.com/api).
	Token   string `yaml:"token"`
	Channel string `yaml:"channel"`
	API     string `yaml:"api"`
	// When is a CEL expression over `event` selecting the events alerted
	// (default: detractors).
	When string `yaml:"when"`
	// RatePerSecond is the channel's message rate (default 1), Burst its
	// short burst (default 3).
	RatePerSecond float64 `yaml:"rate_per_second"`
	Burst         int     `yaml:"burst"`
	// DigestAfter: a batch of more waiting events than this becomes one
	// digest message (default 5).
	DigestAfter int `yaml:"digest_after"`
	// Timeout of one request (default 10s).
	Timeout config.Duration `yaml:"timeout"`
	// LinkBase, when set, links each message to the response in your own
	// tool ("https://cx.example.com/responses/"; the event id is appended)
	// when the provider gave no permalink.
	LinkBase string `yaml:"link_base"`
}

// DefaultWhen is the rule of a channel without `when`.
const DefaultWhen = `event.segment == Segment.SEGMENT_DETRACTOR`

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Kind registers Slack with a hosting service.
var Kind = sink.Kind{Name: "slack", Instances: instances}

func instances(section *yaml.Node, env sink.KindEnv) ([]sink.Instance, error) {
	var c Config
	if err := sink.DecodeStrict(section, &c); err != nil {
		return nil, err
	}
	if len(c.Channels) == 0 {
		return nil, errors.New("channels: name at least one channel")
	}
	seen := map[string]bool{}
	var out []sink.Instance
	for i := range c.Channels {
		ch := c.Channels[i]
		at := fmt.Sprintf("channels[%d] (%s)", i, ch.Name)
		if !nameRE.MatchString(ch.Name) || seen[ch.Name] {
			return nil, fmt.Errorf("%s: name must be unique, lower-case letters, digits and '-'", at)
		}
		seen[ch.Name] = true
		d, err := newChannel(ch, env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		cp := sink.RedisCheckpoint{RDB: env.Redis, Prefix: env.RedisPrefix + ch.Name + ":done:", TTL: 7 * 24 * time.Hour}
		out = append(out, sink.Instance{Name: ch.Name, Group: env.GroupPrefix + ch.Name, Checkpoint: cp, Filter: sink.FilterOf(d.when),
			Open: func(ctx context.Context) (sink.Destination, error) { return d, d.Load(ctx) }})
	}
	return out, nil
}

// Destination posts to one channel.
type Destination struct {
	*sink.DisabledFlag // archived channel: disabled until resumed
	cfg                Channel
	webhook            string // incoming webhook URL, or
	token              string // bot token for chat.postMessage
	client             *http.Client
	rate               sink.SharedRate
	rdb                redis.UniversalClient
	threadKey          string // prefix of "response → its first alert's ts"
	when               *expr.Bool
	now                func() time.Time
}

func newChannel(ch Channel, env sink.KindEnv) (*Destination, error) {
	if (ch.WebhookURL == "") == (ch.Token == "") {
		return nil, errors.New("set either webhook_url or token (with channel)")
	}
	d := &Destination{cfg: ch, rdb: env.Redis, DisabledFlag: &sink.DisabledFlag{RDB: env.Redis, Key: env.RedisPrefix + ch.Name + ":disabled"}, threadKey: env.RedisPrefix + ch.Name + ":thread:", now: time.Now}
	if ch.WebhookURL != "" {
		s, err := config.ResolveSecret(ch.WebhookURL, env.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("webhook_url: %w", err)
		}
		d.webhook = string(s.Reveal())
		if u, err := url.Parse(d.webhook); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New("webhook_url: the secret is not an http(s) URL")
		}
	} else {
		if ch.Channel == "" {
			return nil, errors.New("token needs channel (a channel id such as C0123456789)")
		}
		s, err := config.ResolveSecret(ch.Token, env.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		d.token = string(s.Reveal())
		if d.cfg.API == "" {
			d.cfg.API = "https://slack.com/api"
		}
	}
	if d.cfg.When == "" {
		d.cfg.When = DefaultWhen
	}
	when, err := expr.CompileBool(d.cfg.When)
	if err != nil {
		return nil, fmt.Errorf("when: %w", err)
	}
	d.when = when
	if d.cfg.RatePerSecond == 0 {
		d.cfg.RatePerSecond = 1
	}
	if d.cfg.Burst == 0 {
		d.cfg.Burst = 3
	}
	if d.cfg.DigestAfter == 0 {
		d.cfg.DigestAfter = 5
	}
	if d.cfg.Timeout.Duration == 0 {
		d.cfg.Timeout.Duration = 10 * time.Second
	}
	if d.cfg.RatePerSecond < 0 || d.cfg.Burst < 1 || d.cfg.DigestAfter < 1 || d.cfg.Timeout.Duration < 0 {
		return nil, errors.New("rate_per_second, burst, digest_after and timeout must be positive")
	}
	d.client = &http.Client{Timeout: d.cfg.Timeout.Duration,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	target := d.cfg.Channel
	if target == "" {
		target = ch.Name
	}
	d.rate = sink.SharedRate{RDB: env.Redis, Key: env.RedisPrefix + "rate:" + target,
		Every: time.Duration(float64(time.Second) / d.cfg.RatePerSecond), Burst: d.cfg.Burst}
	return d, nil
}

// Deliver implements sink.Destination: a message per event, or one digest
// for a batch longer than DigestAfter (a backlog).
func (d *Destination) Deliver(ctx context.Context, events []*sink.Event) []error {
	if why, off := d.Disabled(); off {
		return all(len(events), sink.Permanent(fmt.Errorf("slack destination %s is disabled: %s (closedloopctl resume)", d.cfg.Name, why)))
	}
	if len(events) > d.cfg.DigestAfter {
		if _, err := d.send(ctx, digest(events, d.link)); err != nil {
			return all(len(events), err)
		}
		return nil
	}
	var errs []error
	for i, ev := range events {
		err := d.alert(ctx, ev)
		if err == nil {
			_ = ev.MarkDelivered(ctx) // no idempotency at Slack: a crash re-sends only what was not recorded
			continue
		}
		if errs == nil {
			errs = make([]error, len(events))
		}
		errs[i] = err
		if class, _, _ := sink.Classify(err); class != sinkv1.ErrorClass_ERROR_CLASS_PERMANENT { // the rest waits for the retry
			for j := i + 1; j < len(events); j++ {
				errs[j] = sink.Retryable(errors.New("held behind an earlier message of the channel that failed"), 0)
			}
			break
		}
	}
	return errs
}

// threadTTL is how long a response's first alert is kept as the thread of
// its later versions.
const threadTTL = 7 * 24 * time.Hour

// alert posts one event. With chat.postMessage, a later version of a
// response already alerted (its comment added, its score changed) is a
// reply in the thread of the first alert instead of a new alert.
func (d *Destination) alert(ctx context.Context, ev *sink.Event) error {
	f := ev.Feedback
	key := ""
	reply := ""
	if d.token != "" && f.GetSubject().GetId() != "" {
		key = d.threadKey + f.Source + "/" + f.GetSubject().GetType().String() + "/" + f.GetSubject().GetId()
		reply, _ = d.rdb.Get(ctx, key).Result() // without Redis: a new message
	}
	m := alert(f, d.link(f))
	if reply != "" {
		m.ThreadTS = reply
		m.Text = "Update: " + m.Text
		m.Blocks[0]["text"] = map[string]any{"type": "plain_text", "text": cut("Update: "+m.Blocks[0]["text"].(map[string]any)["text"].(string), 150)}
	}
	ts, err := d.send(ev.Ctx, m)
	if err == nil && key != "" && reply == "" && ts != "" {
		_ = d.rdb.Set(context.WithoutCancel(ctx), key, ts, threadTTL).Err()
	}
	return err
}

func all(n int, err error) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

func (d *Destination) link(ev *feedbackv1.FeedbackEvent) string {
	if ev.Permalink != "" {
		return ev.Permalink
	}
	if d.cfg.LinkBase != "" {
		return d.cfg.LinkBase + url.PathEscape(ev.EventId)
	}
	return ""
}

// message is a Slack message: fallback text and Block Kit blocks.
type message struct {
	Channel  string  `json:"channel,omitempty"`
	Text     string  `json:"text"`
	Blocks   []block `json:"blocks,omitempty"`
	ThreadTS string  `json:"thread_ts,omitempty"`
}

type block map[string]any

func text(t string) map[string]any { return map[string]any{"type": "mrkdwn", "text": t} }

// send posts one message, waiting for the channel's shared rate first, and
// returns its ts (chat.postMessage only).
func (d *Destination) send(ctx context.Context, m message) (string, error) {
	if err := d.rate.Wait(ctx); err != nil {
		return "", sink.Retryable(fmt.Errorf("waiting for the channel's rate: %w", err), 0)
	}
	target := d.webhook
	if d.token != "" {
		m.Channel = d.cfg.Channel
		target = strings.TrimRight(d.cfg.API, "/") + "/chat.postMessage"
	}
	body, _ := json.Marshal(m)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return "", sink.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL of an incoming webhook is its secret
		}
		return "", sink.Retryable(fmt.Errorf("POST to Slack (%s): %w", d.cfg.Name, err), 0)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return d.classify(ctx, resp, raw)
}

// disabling are Slack's answers that disable the destination until an
// operator resumes it (the channel is gone for good).
var disabling = map[string]bool{"channel_is_archived": true, "is_archived": true}

func (d *Destination) classify(ctx context.Context, resp *http.Response, raw []byte) (string, error) {
	code := strings.TrimSpace(string(raw))
	if d.token != "" && resp.StatusCode == http.StatusOK {
		var r struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
			TS    string `json:"ts"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return "", sink.Retryable(fmt.Errorf("chat.postMessage answered 200 with a body that is not JSON: %q", code), 0)
		}
		if r.OK {
			return r.TS, nil
		}
		code = r.Error
	} else if resp.StatusCode == http.StatusOK {
		return "", nil // an incoming webhook answers 200 "ok"
	}
	if resp.StatusCode == http.StatusTooManyRequests || code == "ratelimited" {
		after := retry.After(resp.Header.Get("Retry-After"), d.now(), 0)
		if after <= 0 {
			after = time.Second // Slack always sends one; a second if it did not
		}
		_ = d.rate.Push(ctx, after) // every replica waits
		return "", sink.Retryable(fmt.Errorf("slack %s: rate limited (Retry-After %s)", d.cfg.Name, after), after)
	}
	if disabling[code] || resp.StatusCode == http.StatusGone {
		why := fmt.Sprintf("%s at %s", firstNonEmpty(code, "410 Gone"), d.now().UTC().Format(time.RFC3339))
		if err := d.Disable(ctx, why); err != nil {
			return "", sink.Retryable(fmt.Errorf("slack %s: %s, and recording it failed: %w", d.cfg.Name, why, err), 0)
		}
		return "", sink.Permanent(fmt.Errorf("slack %s: %s: the destination is disabled until an operator resumes it", d.cfg.Name, code))
	}
	switch code {
	case "internal_error", "service_unavailable", "request_timeout", "rollup_error":
		return "", sink.Retryable(fmt.Errorf("slack %s: %s", d.cfg.Name, code), 0)
	}
	if resp.StatusCode >= 500 {
		return "", sink.Retryable(fmt.Errorf("slack %s: HTTP %d %s", d.cfg.Name, resp.StatusCode, code), 0)
	}
	return "", sink.Permanent(fmt.Errorf("slack %s: HTTP %d %s", d.cfg.Name, resp.StatusCode, firstNonEmpty(code, "error")))
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
