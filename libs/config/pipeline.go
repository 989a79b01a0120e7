package config

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/libs/expr"
	"github.com/closedloop/closedloop/libs/providers"
	"github.com/closedloop/closedloop/libs/pull"
)

// DefaultDedupeTTL outlasts the longest documented provider retry window
// (FeedBackPro, about 7 h) with a wide margin.
const DefaultDedupeTTL = 72 * time.Hour

// MaxIngestTokens is how many ingest tokens a source may have active at once:
// the current one and the one being rotated out.
const MaxIngestTokens = 2

// Providers lists the provider names a source may use, from the provider
// table (package providers). "hmac" is the generic scheme whose details are
// in the source's hmac block. The value says whether the provider signs its
// webhooks (then secrets are required).
var Providers = func() map[string]bool {
	m := map[string]bool{}
	for _, p := range providers.All() {
		m[p.Name] = p.Signs()
	}
	return m
}()

func providerNames() string {
	names := make([]string, 0, len(Providers))
	for n := range Providers {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

var sourceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Pipeline is the YAML pipeline definition shared by every service; each
// service reads the parts it needs.
type Pipeline struct {
	Sources    []Source   `yaml:"sources"`
	Enrichment Enrichment `yaml:"enrichment"`
	Sinks      Sinks      `yaml:"sinks"`
	Admin      Admin      `yaml:"admin"`
}

// Source is one webhook endpoint: /v1/hooks/{name}/{token}.
type Source struct {
	// Name is the URL path segment: lower-case letters, digits, '-' and '_'.
	Name string `yaml:"name"`
	// Provider selects the signature scheme and the payload mapping, e.g. "delighted".
	Provider string `yaml:"provider"`
	// SecretRefs are the signing secrets in rotation order, as env:NAME or file:PATH.
	SecretRefs []string `yaml:"secrets"`
	// IngestTokenRefs are static secret URL tokens (at most two), as env:NAME
	// or file:PATH — for development and bootstrapping; tokens issued at run
	// time live on the control topic (package ingesttokens).
	IngestTokenRefs []string `yaml:"ingest_tokens"`
	// DedupeTTL is how long an event id is remembered (default 72h).
	DedupeTTL Duration `yaml:"dedupe_ttl"`
	// HMAC defines the generic scheme; required with provider "hmac", refused otherwise.
	HMAC *HMACScheme `yaml:"hmac"`
	// EventID and EventType say where a provider "hmac" source's event id and
	// type are found. Without an event id the id is derived from the body.
	EventID   FieldRef `yaml:"event_id"`
	EventType FieldRef `yaml:"event_type"`
	// RateLimit bounds the requests the source may make (default 100/s, burst 200).
	RateLimit RateLimit `yaml:"rate_limit"`
	// API reads the source's history from its provider's REST API, for
	// backfills and reconciliation (docs/backfill.md).
	API *SourceAPI `yaml:"api"`

	// Secrets are resolved from SecretRefs by LoadPipeline.
	Secrets []Secret `yaml:"-"`
	// tokenHashes are SHA-256 digests of the resolved ingest tokens; the
	// tokens themselves are not kept.
	tokenHashes [][sha256.Size]byte
}

// SourceAPI is how the admin reads a source's history from its
// provider's API (Delighted, Typeform).
type SourceAPI struct {
	// BaseURL overrides the provider's (a regional host, a local fake).
	BaseURL string `yaml:"base_url"`
	// KeyRef is the API key (Delighted) or personal access token
	// (Typeform, scope responses:read), as env:NAME or file:PATH; resolved
	// by the admin when a job starts, so a rotation needs no restart.
	KeyRef string `yaml:"key"`
	// Forms are the Typeform form ids whose responses are read.
	Forms []string `yaml:"forms"`
	// RatePerSecond bounds the requests to the provider, across restarts
	// (default: the provider's, Delighted 5, Typeform 2).
	RatePerSecond int `yaml:"rate_per_second"`
	// Partial also reads Typeform's partial responses.
	Partial bool `yaml:"partial"`
	// Reconcile compares, on a schedule, the provider's recent items with
	// what the pipeline received, and backfills what is missing.
	Reconcile *Reconcile `yaml:"reconcile"`
}

// Reconcile is a source's reconciliation schedule.
type Reconcile struct {
	// Every is how often (default 1h, at least 1m).
	Every Duration `yaml:"every"`
	// Window is how far back each run looks (default 3h, at least Every).
	Window Duration `yaml:"window"`
	// Settle is the most recent part left to the next run: webhooks still
	// in flight, and Typeform's API lists the last minutes late (default 5m).
	Settle Duration `yaml:"settle"`
}

func (s *Source) validateAPI(at string) []error {
	a := s.API
	if a == nil {
		return nil
	}
	var errs []error
	at += ": api"
	if pull.DefaultRate(s.Provider) == 0 {
		return append(errs, fmt.Errorf("%s: provider %q has no API closedloop can read (supported: %v)", at, s.Provider, pull.Supported()))
	}
	if err := checkRef(a.KeyRef); err != nil {
		errs = append(errs, fmt.Errorf("%s: key: %w", at, err))
	}
	if a.BaseURL != "" {
		if u, err := url.Parse(a.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: base_url %q must be an http(s) URL", at, a.BaseURL))
		}
	}
	if pull.NeedsForms(s.Provider) && len(a.Forms) == 0 {
		errs = append(errs, fmt.Errorf("%s: forms: list the form ids whose responses are read", at))
	}
	if !pull.NeedsForms(s.Provider) && len(a.Forms) > 0 {
		errs = append(errs, fmt.Errorf("%s: forms: provider %s has no forms", at, s.Provider))
	}
	if a.RatePerSecond == 0 {
		a.RatePerSecond = pull.DefaultRate(s.Provider)
	}
	if a.RatePerSecond < 0 || a.RatePerSecond > 1000 {
		errs = append(errs, fmt.Errorf("%s: rate_per_second %d must be between 1 and 1000", at, a.RatePerSecond))
	}
	if r := a.Reconcile; r != nil {
		if r.Every.Duration == 0 {
			r.Every.Duration = time.Hour
		}
		if r.Window.Duration == 0 {
			r.Window.Duration = 3 * time.Hour
		}
		if r.Settle.Duration == 0 {
			r.Settle.Duration = 5 * time.Minute
		}
		switch {
		case r.Every.Duration < time.Second:
			errs = append(errs, fmt.Errorf("%s: reconcile.every %s is too often (at least 1s; an hour is usual)", at, r.Every.Duration))
		case r.Window.Duration < r.Every.Duration:
			errs = append(errs, fmt.Errorf("%s: reconcile.window %s must be at least reconcile.every %s (else items fall between runs)", at, r.Window.Duration, r.Every.Duration))
		case r.Settle.Duration < 0 || r.Settle.Duration >= r.Window.Duration:
			errs = append(errs, fmt.Errorf("%s: reconcile.settle %s must be between 0 and the window", at, r.Settle.Duration))
		}
	}
	return errs
}

// TokenDigest is the SHA-256 digest ingest tokens are stored and compared
// as (here and in libs/ingesttokens). A token of up to 128 bytes is hashed
// without an allocation.
func TokenDigest(token string) [sha256.Size]byte {
	var buf [128]byte
	return sha256.Sum256(append(buf[:0], token...))
}

// MatchToken reports in constant time whether token is one of the source's
// active ingest tokens. Every stored hash is compared, match or not.
func (s *Source) MatchToken(token string) bool { return s.MatchDigest(TokenDigest(token)) }

// MatchDigest is MatchToken for a token's TokenDigest.
func (s *Source) MatchDigest(sum [sha256.Size]byte) bool {
	match := 0
	for i := range s.tokenHashes {
		match |= subtle.ConstantTimeCompare(sum[:], s.tokenHashes[i][:])
	}
	return match == 1
}

// HMACScheme is a signature scheme defined in configuration, so that a new
// tool is configuration, not code.
type HMACScheme struct {
	// Header carries the signature.
	Header string `yaml:"header"`
	// Algorithm is sha1, sha256 (default) or sha512.
	Algorithm string `yaml:"algorithm"`
	// Encoding of the signature: hex (default) or base64.
	Encoding string `yaml:"encoding"`
	// Prefix before the encoded signature in the header, e.g. "sha256=".
	Prefix string `yaml:"prefix"`
	// Signed is the template of the signed content: {body}, {id} and
	// {timestamp} are replaced (default "{body}").
	Signed string `yaml:"signed"`
	// TimestampHeader carries the timestamp for {timestamp}.
	TimestampHeader string `yaml:"timestamp_header"`
	// TimestampFormat of that header: unix (seconds, default) or rfc3339
	// (ISO 8601, as Zendesk sends it).
	TimestampFormat string `yaml:"timestamp_format"`
	// IDHeader carries the delivery id for {id}.
	IDHeader string `yaml:"id_header"`
	// Tolerance is the largest accepted clock difference for a signed
	// timestamp (default 5m).
	Tolerance Duration `yaml:"tolerance"`
	// SecretEncoding says how the configured secret becomes the key: raw
	// (default), base64, or whsec (Standard Webhooks: "whsec_" + base64).
	SecretEncoding string `yaml:"secret_encoding"`
}

// Spec is the scheme as the provider table describes one (signing and
// verifying share it).
func (h *HMACScheme) Spec() providers.HMAC {
	return providers.HMAC{Header: h.Header, Algorithm: h.Algorithm, Encoding: h.Encoding, Prefix: h.Prefix, Signed: h.Signed,
		TimestampHeader: h.TimestampHeader, TimestampFormat: h.TimestampFormat, IDHeader: h.IDHeader, Tolerance: h.Tolerance.Duration,
		SecretEncoding: h.SecretEncoding}
}

// FieldRef names where a value is found: a request header, or a dotted
// path into the JSON body ("data.id"). The header wins when both are set.
type FieldRef struct {
	Header string `yaml:"header"`
	Path   string `yaml:"path"`
}

// RateLimit is a token bucket.
type RateLimit struct {
	// PerSecond is the sustained rate (default 100).
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many requests may come at once (default 2 × PerSecond).
	Burst int `yaml:"burst"`
}

// Sinks holds the per-destination settings.
type Sinks struct {
	Warehouse WarehouseSink `yaml:"warehouse"`
	Webhook   WebhookSink   `yaml:"webhook"`
	// Kinds are the sections of the other destination kinds (sinks.slack,
	// ...), each decoded strictly by the package of its kind in the service
	// that hosts it (sink.Kind): an unknown key there fails that service's
	// start, naming the key. Other services keep them as they are.
	Kinds map[string]yaml.Node `yaml:",inline"`
}

// WebhookSink configures sink-webhook: every endpoint receives every event,
// each with its own consumer group, checkpoint and circuit breaker, so a dead
// endpoint never slows another.
type WebhookSink struct {
	Endpoints []WebhookEndpoint `yaml:"endpoints"`
}

// WebhookEndpoint is one receiver of signed webhooks (Standard Webhooks).
type WebhookEndpoint struct {
	// Name identifies the endpoint in metrics, dead letters and its consumer
	// group: lower-case letters, digits and '-'.
	Name string `yaml:"name"`
	// URL receives a POST per event (http or https).
	URL string `yaml:"url"`
	// SecretRef is the signing secret's reference (env:NAME or file:PATH);
	// a "whsec_" secret is base64 after the prefix, as Standard Webhooks
	// senders hand them out. The service resolves it; others only check it.
	SecretRef string `yaml:"secret"`
	// Timeout of one POST (default 10s, at most 60s).
	Timeout Duration `yaml:"timeout"`
	// Filter, a CEL expression over `event` (package expr), selects the
	// events this endpoint receives; empty: every event.
	Filter Filter `yaml:"filter"`
}

// WarehouseSink configures sink-warehouse. The database address comes from
// the DATABASE_URL environment variable, not from here.
type WarehouseSink struct {
	// Schema is the PostgreSQL schema the tables live in (default "closedloop").
	Schema string `yaml:"schema"`
	// BatchSize is the most rows written in one statement (default 500):
	// the sink's batches form naturally from what has been fetched, up to it.
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is accepted and ignored: no row waits for its batch to
	// fill (natural batching). Kept so that existing files still load.
	FlushInterval Duration `yaml:"flush_interval"`
	// Filter, a CEL expression over `event` (package expr), selects the
	// events written; empty: every event.
	Filter Filter `yaml:"filter"`
}

// Filter is a boolean CEL expression over `event`, compiled (and so
// type-checked) when the pipeline file is loaded.
type Filter struct {
	Source string
	// Expr is the compiled expression; nil when Source is empty.
	Expr *expr.Bool
}

// UnmarshalYAML takes the expression as a string.
func (f *Filter) UnmarshalYAML(n *yaml.Node) error { return n.Decode(&f.Source) }

func (f *Filter) compile(at string) error {
	f.Expr = nil
	if strings.TrimSpace(f.Source) == "" {
		return nil
	}
	b, err := expr.CompileBool(f.Source)
	if err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	f.Expr = b
	return nil
}

// Duration is a time.Duration written as "72h" or "20ms" in YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration such as 20ms, 5s or 72h", n.Line, s)
	}
	d.Duration = v
	return nil
}

// Source returns the source with the given name.
func (p *Pipeline) Source(name string) (*Source, bool) {
	for i := range p.Sources {
		if p.Sources[i].Name == name {
			return &p.Sources[i], true
		}
	}
	return nil, false
}

// LoadPipeline reads and validates a pipeline file and resolves its secret
// references with lookup (os.LookupEnv in services). A service that does not
// verify webhooks passes a nil lookup: the references are then only checked
// for form, and the service never holds the signing keys or ingest tokens.
func LoadPipeline(path string, lookup func(string) (string, bool)) (*Pipeline, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pipeline config: %w", err)
	}
	p, err := ParsePipeline(b, lookup)
	if err != nil {
		return nil, fmt.Errorf("pipeline config %s: %w", path, err)
	}
	return p, nil
}

// ParsePipeline is LoadPipeline on bytes. Unknown keys are errors, so a typo
// does not silently fall back to a default.
func ParsePipeline(b []byte, lookup func(string) (string, bool)) (*Pipeline, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Pipeline
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	var errs []error
	seen := map[string]bool{}
	for i := range p.Sources {
		s := &p.Sources[i]
		at := fmt.Sprintf("sources[%d]", i)
		if s.Name != "" {
			at = fmt.Sprintf("sources[%d] (%s)", i, s.Name)
		}
		if !sourceNameRE.MatchString(s.Name) {
			errs = append(errs, fmt.Errorf("%s: name %q must be 1-63 lower-case letters, digits, '-' or '_'", at, s.Name))
		}
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("%s: name is used twice", at))
		}
		seen[s.Name] = true
		signs, known := Providers[s.Provider]
		if !known {
			errs = append(errs, fmt.Errorf("%s: provider %q is not supported (supported: %s)", at, s.Provider, providerNames()))
		}
		if signs && len(s.SecretRefs) == 0 {
			errs = append(errs, fmt.Errorf("%s: secrets: at least one signing secret reference is required", at))
		}
		if known && !signs && len(s.SecretRefs) > 0 {
			errs = append(errs, fmt.Errorf("%s: secrets: provider %s does not sign its webhooks; remove the secrets (the ingest token is the check)", at, s.Provider))
		}
		errs = append(errs, s.validateScheme(at)...)
		errs = append(errs, s.validateAPI(at)...)
		if len(s.IngestTokenRefs) > MaxIngestTokens {
			errs = append(errs, fmt.Errorf("%s: ingest_tokens: at most %d token references, got %d", at, MaxIngestTokens, len(s.IngestTokenRefs)))
		}
		if s.DedupeTTL.Duration == 0 {
			s.DedupeTTL.Duration = DefaultDedupeTTL
		}
		if lookup == nil {
			for j, ref := range append(append([]string(nil), s.SecretRefs...), s.IngestTokenRefs...) {
				if err := checkRef(ref); err != nil {
					errs = append(errs, fmt.Errorf("%s: secret reference %d: %w", at, j, err))
				}
			}
			continue
		}
		for j, ref := range s.SecretRefs {
			sec, err := ResolveSecret(ref, lookup)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: secrets[%d]: %w", at, j, err))
				continue
			}
			s.Secrets = append(s.Secrets, sec)
		}
		for j, ref := range s.IngestTokenRefs {
			tok, err := ResolveSecret(ref, lookup)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: ingest_tokens[%d]: %w", at, j, err))
				continue
			}
			if why := WeakToken(tok.Reveal(), MinIngestTokenLength); why != "" {
				errs = append(errs, fmt.Errorf("%s: ingest_tokens[%d] (%s): %s; a token needs at least 128 bits of randomness (make one with: openssl rand -hex 24)", at, j, ref, why))
				continue
			}
			s.tokenHashes = append(s.tokenHashes, sha256.Sum256(tok.Reveal()))
		}
	}
	errs = append(errs, p.Enrichment.validate()...)
	errs = append(errs, p.Admin.validate(lookup)...)
	w := &p.Sinks.Warehouse
	if w.Schema == "" {
		w.Schema = "closedloop"
	}
	if !regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`).MatchString(w.Schema) {
		errs = append(errs, fmt.Errorf("sinks.warehouse.schema %q must be a lower-case SQL identifier", w.Schema))
	}
	if w.BatchSize == 0 {
		w.BatchSize = 500
	}
	if w.BatchSize < 1 || w.BatchSize > 10000 {
		errs = append(errs, fmt.Errorf("sinks.warehouse.batch_size %d must be between 1 and 10000", w.BatchSize))
	}
	if w.FlushInterval.Duration == 0 {
		w.FlushInterval.Duration = 20 * time.Millisecond
	}
	if err := w.Filter.compile("sinks.warehouse.filter"); err != nil {
		errs = append(errs, err)
	}
	names := map[string]bool{}
	for i := range p.Sinks.Webhook.Endpoints {
		e := &p.Sinks.Webhook.Endpoints[i]
		at := fmt.Sprintf("sinks.webhook.endpoints[%d] (%s)", i, e.Name)
		if !regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`).MatchString(e.Name) {
			errs = append(errs, fmt.Errorf("%s: name must be lower-case letters, digits and '-'", at))
		}
		if names[e.Name] {
			errs = append(errs, fmt.Errorf("%s: name is used twice", at))
		}
		names[e.Name] = true
		if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: url %q must be an http(s) URL", at, e.URL))
		}
		if err := checkRef(e.SecretRef); err != nil {
			errs = append(errs, fmt.Errorf("%s: secret: %w", at, err))
		}
		if e.Timeout.Duration == 0 {
			e.Timeout.Duration = 10 * time.Second
		}
		if e.Timeout.Duration < 0 || e.Timeout.Duration > time.Minute {
			errs = append(errs, fmt.Errorf("%s: timeout must be between 0 and 60s", at))
		}
		if err := e.Filter.compile(at + ": filter"); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &p, nil
}

var headerNameRE = regexp.MustCompile(`^[A-Za-z0-9-]+$`)

// validateScheme checks the hmac block and the rate limit, and fills in defaults.
func (s *Source) validateScheme(at string) []error {
	var errs []error
	if s.RateLimit.PerSecond == 0 {
		s.RateLimit.PerSecond = 100
	}
	if s.RateLimit.PerSecond < 0 || s.RateLimit.Burst < 0 {
		errs = append(errs, fmt.Errorf("%s: rate_limit must not be negative", at))
	}
	if s.RateLimit.Burst == 0 {
		s.RateLimit.Burst = int(2*s.RateLimit.PerSecond) + 1
	}
	for _, h := range []string{s.EventID.Header, s.EventType.Header} {
		if h != "" && !headerNameRE.MatchString(h) {
			errs = append(errs, fmt.Errorf("%s: %q is not a header name", at, h))
		}
	}
	if s.Provider != "hmac" {
		if s.HMAC != nil {
			errs = append(errs, fmt.Errorf("%s: hmac: only a source with provider hmac defines its scheme", at))
		}
		return errs
	}
	h := s.HMAC
	if h == nil {
		return append(errs, fmt.Errorf("%s: provider hmac needs an hmac block (header, algorithm, encoding, prefix, signed, ...)", at))
	}
	if !headerNameRE.MatchString(h.Header) {
		errs = append(errs, fmt.Errorf("%s: hmac.header %q is not a header name", at, h.Header))
	}
	switch h.Algorithm {
	case "":
		h.Algorithm = "sha256"
	case "sha1", "sha256", "sha512":
	default:
		errs = append(errs, fmt.Errorf("%s: hmac.algorithm %q: use sha1, sha256 or sha512", at, h.Algorithm))
	}
	switch h.Encoding {
	case "":
		h.Encoding = "hex"
	case "hex", "base64":
	default:
		errs = append(errs, fmt.Errorf("%s: hmac.encoding %q: use hex or base64", at, h.Encoding))
	}
	switch h.SecretEncoding {
	case "":
		h.SecretEncoding = "raw"
	case "raw", "base64", "whsec":
	default:
		errs = append(errs, fmt.Errorf("%s: hmac.secret_encoding %q: use raw, base64 or whsec", at, h.SecretEncoding))
	}
	switch h.TimestampFormat {
	case "":
		h.TimestampFormat = providers.TimestampUnix
	case providers.TimestampUnix, providers.TimestampRFC3339:
	default:
		errs = append(errs, fmt.Errorf("%s: hmac.timestamp_format %q: use unix or rfc3339", at, h.TimestampFormat))
	}
	if h.Signed == "" {
		h.Signed = "{body}"
	}
	if !strings.Contains(h.Signed, "{body}") {
		errs = append(errs, fmt.Errorf("%s: hmac.signed %q must contain {body}: a signature that does not cover the body proves nothing", at, h.Signed))
	}
	if strings.Contains(h.Signed, "{timestamp}") && h.TimestampHeader == "" {
		errs = append(errs, fmt.Errorf("%s: hmac.signed uses {timestamp}: set hmac.timestamp_header", at))
	}
	if strings.Contains(h.Signed, "{id}") && h.IDHeader == "" {
		errs = append(errs, fmt.Errorf("%s: hmac.signed uses {id}: set hmac.id_header", at))
	}
	if rest := strings.NewReplacer("{body}", "", "{id}", "", "{timestamp}", "").Replace(h.Signed); strings.ContainsAny(rest, "{}") {
		errs = append(errs, fmt.Errorf("%s: hmac.signed %q: only {body}, {id} and {timestamp} may be used", at, h.Signed))
	}
	if h.Tolerance.Duration == 0 {
		h.Tolerance.Duration = 5 * time.Minute
	}
	return errs
}
