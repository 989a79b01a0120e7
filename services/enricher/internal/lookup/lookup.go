// Package lookup resolves one configured enrichment lookup (a REST call per
// key) for a batch of keys: Redis first (positive and negative answers, with
// their TTLs), then the service for the misses — one request in flight per
// key, a rate limit, retries with backoff for retryable failures
// (Retry-After honoured) and a circuit breaker. It never holds a batch
// longer than the lookup's max_delay: what has no answer by then is FAILED
// ("not enriched", with the reason), and a request still running finishes
// in the background and fills the cache for the next event.
package lookup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/retry"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// Lookup resolves keys for one configured lookup. Safe for concurrent use.
type Lookup struct {
	cfg     config.Lookup
	headers http.Header
	client  *http.Client
	rdb     redis.UniversalClient
	prefix  string
	limiter *rate.Limiter
	breaker *retry.Breaker
	sf      singleflight.Group
	log     *slog.Logger

	outcomes metric.Int64Counter
	latency  metric.Float64Histogram
	attrs    attribute.Set
}

// Options are what New needs besides the configuration.
type Options struct {
	RDB    redis.UniversalClient
	Prefix string // Redis key prefix, e.g. "closedloop:enrich:"
	Log    *slog.Logger
	// Lookup resolves secret_headers references (os.LookupEnv).
	LookupEnv func(string) (string, bool)
	// Client overrides the HTTP client (tests); its Timeout is the lookup's.
	Client *http.Client
}

// New builds a Lookup, resolving its secret headers.
func New(cfg config.Lookup, o Options) (*Lookup, error) {
	h := http.Header{}
	for k, v := range cfg.Headers {
		h.Set(k, v)
	}
	for k, v := range cfg.SecretHeaders {
		prefix, ref := "", v
		if i := strings.LastIndexByte(v, ' '); i >= 0 {
			prefix, ref = v[:i+1], v[i+1:]
		}
		s, err := config.ResolveSecret(ref, o.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("enrichment lookup %s: secret_headers.%s: %w", cfg.Name, k, err)
		}
		h.Set(k, prefix+string(s.Reveal()))
	}
	if h.Get("Accept") == "" {
		h.Set("Accept", "application/json")
	}
	h.Set("User-Agent", "closedloop-enricher/1")
	client := o.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}
	}
	c := *client
	c.Timeout = cfg.Timeout.Duration
	// Never follow a redirect: it would carry the secret headers to wherever
	// the answer points. A 3xx is a configuration error, said as such.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	l := &Lookup{cfg: cfg, headers: h, client: &c, rdb: o.RDB, prefix: o.Prefix + cfg.Name + ":", log: o.Log,
		limiter: rate.NewLimiter(rate.Limit(cfg.RateLimit.PerSecond), cfg.RateLimit.Burst),
		breaker: retry.NewBreaker(cfg.BreakerThreshold, cfg.BreakerOpenFor.Duration, nil),
		attrs:   attribute.NewSet(attribute.String("lookup", cfg.Name))}
	meter := otel.Meter("github.com/closedloop/closedloop/services/enricher")
	l.outcomes, _ = meter.Int64Counter("closedloop.enricher.lookups", metric.WithUnit("{lookup}"),
		metric.WithDescription("Lookup results per event key, by outcome: hit, negative_hit, found, not_found, failed."))
	l.latency, _ = meter.Float64Histogram("closedloop.enricher.lookup.duration", metric.WithUnit("s"),
		metric.WithDescription("Time of one lookup request to the service, retries included."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	_, _ = meter.Int64ObservableGauge("closedloop.enricher.lookup.breaker_state", metric.WithUnit("{state}"),
		metric.WithDescription("Lookup circuit breaker: 0 closed, 1 open, 2 half-open."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(l.breaker.State()), metric.WithAttributeSet(l.attrs))
			return nil
		}))
	return l, nil
}

// Name is the lookup's name.
func (l *Lookup) Name() string { return l.cfg.Name }

// Config is the lookup's configuration.
func (l *Lookup) Config() config.Lookup { return l.cfg }

// Breaker is the lookup's circuit breaker.
func (l *Lookup) Breaker() *retry.Breaker { return l.breaker }

// cached is the Redis form of an answer.
type cached struct {
	Fields   map[string]any `json:"f,omitempty"`
	NotFound bool           `json:"nf,omitempty"`
}

func (c *cached) result(fromCache bool) *feedbackv1.LookupResult {
	if c.NotFound {
		return &feedbackv1.LookupResult{Status: feedbackv1.LookupStatus_LOOKUP_STATUS_NOT_FOUND, Cached: fromCache}
	}
	return &feedbackv1.LookupResult{Status: feedbackv1.LookupStatus_LOOKUP_STATUS_FOUND, Fields: toValues(c.Fields), Cached: fromCache}
}

func (l *Lookup) cacheKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return l.prefix + hex.EncodeToString(sum[:16])
}

func (l *Lookup) count(ctx context.Context, outcome string, n int) {
	if n > 0 {
		l.outcomes.Add(ctx, int64(n), metric.WithAttributeSet(attribute.NewSet(attribute.String("lookup", l.cfg.Name), attribute.String("outcome", outcome))))
	}
}

// Resolve answers every key (distinct, non-empty), waiting at most the
// lookup's max_delay.
func (l *Lookup) Resolve(ctx context.Context, keys []string) map[string]*feedbackv1.LookupResult {
	out := make(map[string]*feedbackv1.LookupResult, len(keys))
	if len(keys) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.MaxDelay.Duration)
	defer cancel()
	misses := l.fromCache(ctx, keys, out)
	if len(misses) == 0 {
		return out
	}
	type answer struct {
		key string
		res *feedbackv1.LookupResult
	}
	answers := make(chan answer, len(misses))
	late := fmt.Sprintf("no answer within max_delay %s", l.cfg.MaxDelay.Duration)
	sem := make(chan struct{}, 16)
	for _, k := range misses {
		go func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				answers <- answer{k, failed(late)}
				return
			}
			ch := l.sf.DoChan(k, func() (any, error) { return l.fetchAndCache(k), nil })
			select {
			case r := <-ch:
				answers <- answer{k, r.Val.(*feedbackv1.LookupResult)}
			case <-ctx.Done():
				answers <- answer{k, failed(late)}
			}
		}()
	}
	for range misses {
		a := <-answers
		out[a.key] = a.res
		switch a.res.Status {
		case feedbackv1.LookupStatus_LOOKUP_STATUS_FOUND:
			l.count(ctx, "found", 1)
		case feedbackv1.LookupStatus_LOOKUP_STATUS_NOT_FOUND:
			l.count(ctx, "not_found", 1)
		default:
			l.count(ctx, "failed", 1)
		}
	}
	return out
}

// fromCache fills out from Redis and returns the keys it had no answer for.
// A Redis failure makes every key a miss (the service is asked instead).
func (l *Lookup) fromCache(ctx context.Context, keys []string, out map[string]*feedbackv1.LookupResult) []string {
	ck := make([]string, len(keys))
	for i, k := range keys {
		ck[i] = l.cacheKey(k)
	}
	vals, err := l.rdb.MGet(ctx, ck...).Result()
	if err != nil {
		l.log.WarnContext(ctx, "enrichment cache unavailable: asking the service", "lookup", l.cfg.Name, "error", err.Error())
		return keys
	}
	var misses []string
	hits, neg := 0, 0
	for i, v := range vals {
		s, ok := v.(string)
		var c cached
		if !ok || json.Unmarshal([]byte(s), &c) != nil {
			misses = append(misses, keys[i])
			continue
		}
		if c.NotFound {
			neg++
		} else {
			hits++
		}
		out[keys[i]] = c.result(true)
	}
	l.count(ctx, "hit", hits)
	l.count(ctx, "negative_hit", neg)
	return misses
}

// fetchAndCache asks the service (retries, breaker, rate limit) and caches a
// definite answer. It runs detached from the batch: a slow answer still
// fills the cache after the batch went on without it.
func (l *Lookup) fetchAndCache(key string) *feedbackv1.LookupResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(l.cfg.Attempts)*(l.cfg.Timeout.Duration+time.Second))
	defer cancel()
	// Checked again inside the single flight: a caller that missed the cache
	// just before another's answer was written finds it now.
	if s, err := l.rdb.Get(ctx, l.cacheKey(key)).Result(); err == nil {
		var c cached
		if json.Unmarshal([]byte(s), &c) == nil {
			return c.result(true)
		}
	}
	start := time.Now()
	res, c := l.fetch(ctx, key)
	l.latency.Record(ctx, time.Since(start).Seconds(), metric.WithAttributeSet(l.attrs))
	if c != nil {
		ttl := l.cfg.CacheTTL.Duration
		if c.NotFound {
			ttl = l.cfg.NegativeTTL.Duration
		}
		b, _ := json.Marshal(c)
		if err := l.rdb.Set(ctx, l.cacheKey(key), b, ttl).Err(); err != nil {
			l.log.Warn("enrichment cache write failed", "lookup", l.cfg.Name, "error", err.Error())
		}
	}
	return res
}

func (l *Lookup) fetch(ctx context.Context, key string) (*feedbackv1.LookupResult, *cached) {
	var last string
	for attempt := 1; attempt <= l.cfg.Attempts; attempt++ {
		probe, ok := l.breaker.TryAcquire()
		if !ok {
			return failed("circuit breaker open: the service failed repeatedly (" + orDefault(last, "earlier requests") + ")"), nil
		}
		if err := l.limiter.Wait(ctx); err != nil {
			if probe {
				l.breaker.Failure()
			}
			return failed("rate limit: " + err.Error()), nil
		}
		c, retryAfter, err := l.request(ctx, key)
		if err == nil {
			l.breaker.Success()
			return c.result(false), c
		}
		l.breaker.Failure()
		last = err.Error()
		var perm permanentErr
		if errors.As(err, &perm) || attempt == l.cfg.Attempts {
			break
		}
		wait := max(retry.Backoff(attempt, 100*time.Millisecond, 2*time.Second), retryAfter)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return failed(last), nil
		case <-t.C:
		}
	}
	return failed(last), nil
}

type permanentErr struct{ error }

// EscapeKey makes a key safe anywhere in a URL, path segment or query
// value: every byte but the unreserved ones (RFC 3986: letters, digits,
// "-", "_", ".", "~") is percent-encoded — "/", "?", "#", "&", "=" and "%"
// included — and a key that is a dot segment ("." or "..") is encoded whole,
// so no key can reach another path or add a parameter.
func EscapeKey(key string) string {
	if key == "." || key == ".." {
		return strings.Repeat("%2E", len(key))
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(key))
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// request makes one request. A definite answer (found or not found) has a
// nil error; retryable failures carry the Retry-After to wait.
func (l *Lookup) request(ctx context.Context, key string) (*cached, time.Duration, error) {
	u := strings.ReplaceAll(l.cfg.URL, "{key}", EscapeKey(key))
	req, err := http.NewRequestWithContext(ctx, l.cfg.Method, u, nil)
	if err != nil {
		return nil, 0, permanentErr{err}
	}
	req.Header = l.headers.Clone()
	resp, err := l.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", l.cfg.Method, redact(l.cfg.URL), unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the answer: %w", err)
	}
	switch {
	case slices.Contains(l.cfg.NotFoundStatus, resp.StatusCode):
		return &cached{NotFound: true}, 0, nil
	case resp.StatusCode/100 == 2:
		var doc any
		if err := json.Unmarshal(body, &doc); err != nil {
			return nil, 0, permanentErr{fmt.Errorf("HTTP %d with a body that is not JSON: %w", resp.StatusCode, err)}
		}
		fields := map[string]any{}
		for name, path := range l.cfg.Fields {
			if v, ok := At(doc, path); ok {
				fields[name] = v
			}
		}
		return &cached{Fields: fields}, 0, nil
	case resp.StatusCode/100 == 3:
		return nil, 0, permanentErr{fmt.Errorf("HTTP %d from %s: redirects are not followed (they would carry the secret headers); set the lookup's url to the final address", resp.StatusCode, redact(l.cfg.URL))}
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return nil, retry.After(resp.Header.Get("Retry-After"), time.Now(), time.Minute), fmt.Errorf("HTTP %d from %s", resp.StatusCode, redact(l.cfg.URL))
	default:
		return nil, 0, permanentErr{fmt.Errorf("HTTP %d from %s: %s", resp.StatusCode, redact(l.cfg.URL), strings.TrimSpace(string(body[:min(len(body), 200)])))}
	}
}

// At finds a dotted path ("account.owner.email", "owners[0].email") in a
// decoded JSON document.
func At(doc any, path string) (any, bool) {
	cur := doc
	for seg := range strings.SplitSeq(path, ".") {
		name, idx := seg, -1
		if i := strings.IndexByte(seg, '['); i >= 0 && strings.HasSuffix(seg, "]") {
			n, err := strconv.Atoi(seg[i+1 : len(seg)-1])
			if err != nil || n < 0 {
				return nil, false
			}
			name, idx = seg[:i], n
		}
		if name != "" {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = m[name]; !ok {
				return nil, false
			}
		}
		if idx >= 0 {
			l, ok := cur.([]any)
			if !ok || idx >= len(l) {
				return nil, false
			}
			cur = l[idx]
		}
	}
	return cur, true
}

func toValues(m map[string]any) map[string]*structpb.Value {
	out := make(map[string]*structpb.Value, len(m))
	for k, v := range m {
		pv, err := structpb.NewValue(v)
		if err != nil {
			pv = structpb.NewStringValue(fmt.Sprint(v))
		}
		out[k] = pv
	}
	return out
}

func failed(why string) *feedbackv1.LookupResult {
	return &feedbackv1.LookupResult{Status: feedbackv1.LookupStatus_LOOKUP_STATUS_FAILED, Error: why}
}

// redact drops the query string of the URL template: errors name the
// template ("…/accounts/{key}"), never the key (an email is personal data).
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
