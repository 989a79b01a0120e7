package config

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/closedloop/closedloop/libs/expr"
)

// Enrichment configures the enricher: lookups that add account or contact
// context to each event, and routing rules that set labels and the lane.
type Enrichment struct {
	Lookups []Lookup `yaml:"lookups"`
	Rules   []Rule   `yaml:"rules"`
	// DetractorsToPriority adds the default rule "detractors", which sends
	// every detractor to the priority lane, before the configured rules
	// (default true).
	DetractorsToPriority *bool `yaml:"detractors_to_priority"`
}

// Lookup is a REST call per event (cached): GET {url with the key} and take
// fields from the JSON answer.
type Lookup struct {
	// Name identifies the lookup in the event's enrichment, metrics and
	// cache keys: lower-case letters, digits and '_'.
	Name string `yaml:"name"`
	// Key is a CEL expression over `event` giving the value looked up
	// (e.g. the respondent's email domain); "" means the event has none.
	Key string `yaml:"key"`
	// URL is the request URL; "{key}" is replaced by the key with every byte
	// but letters, digits and "-_.~" percent-encoded (safe in a path or a
	// query). Redirects are not followed (they would carry SecretHeaders).
	URL string `yaml:"url"`
	// Method is GET (default) or POST.
	Method string `yaml:"method"`
	// Headers are sent as they are (Accept, a tenant id).
	Headers map[string]string `yaml:"headers"`
	// SecretHeaders are sent with a secret value: "[prefix ]<env:NAME|file:PATH>",
	// e.g. Authorization: "Bearer env:CRM_TOKEN".
	SecretHeaders map[string]string `yaml:"secret_headers"`
	// Fields maps a field name (as rules and sinks see it) to a dotted path
	// in the JSON answer ("account.tier", "owners[0].email").
	Fields map[string]string `yaml:"fields"`
	// NotFoundStatus lists the HTTP statuses that mean "no such record"
	// (default [404]); they are cached for NegativeTTL.
	NotFoundStatus []int `yaml:"not_found_status"`
	// Timeout of one request (default 2s).
	Timeout Duration `yaml:"timeout"`
	// CacheTTL (default 1h) and NegativeTTL (default 5m) keep answers in Redis.
	CacheTTL    Duration `yaml:"cache_ttl"`
	NegativeTTL Duration `yaml:"negative_ttl"`
	// RateLimit bounds requests to the service (default 50/s, burst 50).
	RateLimit RateLimit `yaml:"rate_limit"`
	// Attempts per key, retryable failures (timeouts, 5xx, 429) retried
	// with backoff, Retry-After honoured (default 3).
	Attempts int `yaml:"attempts"`
	// MaxDelay is the most a batch of events waits for this lookup; then the
	// events go on marked "not enriched" (default 3s).
	MaxDelay Duration `yaml:"max_delay"`
	// BreakerThreshold consecutive failed keys open the circuit breaker
	// (default 5); while open, events go on not enriched at once, and a
	// probe is made every BreakerOpenFor (default 30s).
	BreakerThreshold int      `yaml:"breaker_threshold"`
	BreakerOpenFor   Duration `yaml:"breaker_open_for"`

	// KeyExpr is Key compiled.
	KeyExpr *expr.String `yaml:"-"`
}

// Rule routes events: when When holds, Labels are added and, with Lane set,
// the event goes to that lane ("priority" wins over "standard").
type Rule struct {
	Name   string   `yaml:"name"`
	When   string   `yaml:"when"`
	Labels []string `yaml:"labels"`
	// Lane is "priority", "standard" or "" (no say).
	Lane string `yaml:"lane"`

	// Expr is When compiled.
	Expr *expr.Rule `yaml:"-"`
}

// DefaultRule is the rule DetractorsToPriority adds.
const DefaultRule = `event.segment == Segment.SEGMENT_DETRACTOR`

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// RoutingRules are the rules in evaluation order: the default rule first
// (unless switched off), then the configured ones.
func (e *Enrichment) RoutingRules() []Rule {
	var out []Rule
	if e.DetractorsToPriority == nil || *e.DetractorsToPriority {
		r, _ := expr.CompileRule(DefaultRule)
		out = append(out, Rule{Name: "detractors", When: DefaultRule, Lane: "priority", Expr: r})
	}
	return append(out, e.Rules...)
}

func (e *Enrichment) validate() []error {
	var errs []error
	names := map[string]bool{}
	fields := map[string]string{} // field name -> lookup
	for i := range e.Lookups {
		l := &e.Lookups[i]
		at := fmt.Sprintf("enrichment.lookups[%d] (%s)", i, l.Name)
		errs = append(errs, uniqueName(at, l.Name, names, "")...)
		k, err := expr.CompileString(l.Key)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: key: %w", at, err))
		}
		l.KeyExpr = k
		if u, err := url.Parse(strings.ReplaceAll(l.URL, "{key}", "k")); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: url %q must be an http(s) URL", at, l.URL))
		} else if !strings.Contains(l.URL, "{key}") {
			errs = append(errs, fmt.Errorf("%s: url %q must contain {key}", at, l.URL))
		}
		switch l.Method = strings.ToUpper(l.Method); l.Method {
		case "":
			l.Method = "GET"
		case "GET", "POST":
		default:
			errs = append(errs, fmt.Errorf("%s: method %q must be GET or POST", at, l.Method))
		}
		for name, v := range l.SecretHeaders {
			ref := v
			if i := strings.LastIndexByte(v, ' '); i >= 0 {
				ref = v[i+1:]
			}
			if err := checkRef(ref); err != nil {
				errs = append(errs, fmt.Errorf("%s: secret_headers.%s: %w", at, name, err))
			}
		}
		if len(l.Fields) == 0 {
			errs = append(errs, fmt.Errorf("%s: fields: name at least one field to take from the answer", at))
		}
		for _, f := range sortedKeys(l.Fields) {
			if !nameRE.MatchString(f) {
				errs = append(errs, fmt.Errorf("%s: field name %q must be lower-case letters, digits and '_'", at, f))
			}
			if other, dup := fields[f]; dup {
				errs = append(errs, fmt.Errorf("%s: field %q is also taken by lookup %s (rules see fields by name)", at, f, other))
			}
			fields[f] = l.Name
			if strings.TrimSpace(l.Fields[f]) == "" {
				errs = append(errs, fmt.Errorf("%s: field %q: empty path", at, f))
			}
		}
		if len(l.NotFoundStatus) == 0 {
			l.NotFoundStatus = []int{404}
		}
		defaults := []struct {
			d   *Duration
			def time.Duration
		}{{&l.Timeout, 2 * time.Second}, {&l.CacheTTL, time.Hour}, {&l.NegativeTTL, 5 * time.Minute}, {&l.MaxDelay, 3 * time.Second}, {&l.BreakerOpenFor, 30 * time.Second}}
		for _, d := range defaults {
			if d.d.Duration == 0 {
				d.d.Duration = d.def
			}
		}
		if l.RateLimit.PerSecond == 0 {
			l.RateLimit.PerSecond = 50
		}
		if l.RateLimit.Burst == 0 {
			l.RateLimit.Burst = max(1, int(l.RateLimit.PerSecond))
		}
		if l.Attempts == 0 {
			l.Attempts = 3
		}
		if l.BreakerThreshold == 0 {
			l.BreakerThreshold = 5
		}
		if l.RateLimit.PerSecond < 0 || l.Attempts < 1 || l.BreakerThreshold < 1 || l.MaxDelay.Duration < l.Timeout.Duration {
			errs = append(errs, fmt.Errorf("%s: rate_limit must be positive, attempts and breaker_threshold at least 1, max_delay at least the timeout", at))
		}
	}
	rules := map[string]bool{"detractors": e.DetractorsToPriority == nil || *e.DetractorsToPriority}
	for i := range e.Rules {
		r := &e.Rules[i]
		at := fmt.Sprintf("enrichment.rules[%d] (%s)", i, r.Name)
		errs = append(errs, uniqueName(at, r.Name, rules, ` ("detractors" is the default rule's)`)...)
		x, err := expr.CompileRule(r.When)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: when: %w", at, err))
		}
		r.Expr = x
		switch r.Lane {
		case "", "priority", "standard":
		default:
			errs = append(errs, fmt.Errorf("%s: lane %q must be priority, standard or empty", at, r.Lane))
		}
		if r.Lane == "" && len(r.Labels) == 0 {
			errs = append(errs, fmt.Errorf("%s: a rule must set labels, a lane, or both", at))
		}
	}
	return errs
}

// uniqueName checks a lookup's or rule's name and records it in seen.
func uniqueName(at, name string, seen map[string]bool, hint string) []error {
	var errs []error
	if !nameRE.MatchString(name) {
		errs = append(errs, fmt.Errorf("%s: name must be lower-case letters, digits and '_'", at))
	}
	if seen[name] {
		errs = append(errs, fmt.Errorf("%s: name is used twice%s", at, hint))
	}
	seen[name] = true
	return errs
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
