package ingest

import (
	"fmt"
	"math"
	"sync"

	"golang.org/x/time/rate"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/services/ingress/internal/verify"
)

// source is one configured source ready to serve.
type source struct {
	cfg      *config.Source
	provider verify.Provider
	limiter  *rate.Limiter
	// unverified bounds the requests that fail verification; it is separate
	// so that forged requests never spend the source's rate limit.
	unverified *rate.Limiter
	// kept are the request headers stored in the record.
	kept []keptHeader
	// reads are the request headers the provider's scheme, its ids and the
	// record read, canonical: the only ones copied out of a request.
	reads []string
}

// Sources is an immutable snapshot of the configured sources. A reload
// builds a new one; the rate limiters carry over by source name so a reload
// does not hand out a fresh burst.
type Sources struct {
	byName map[string]*source
}

// limiters keeps one token bucket per source name across reloads.
type limiters struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func (l *limiters) get(name string, rl config.RateLimit) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*rate.Limiter{}
	}
	lim, ok := l.m[name]
	if !ok {
		lim = rate.NewLimiter(rate.Limit(rl.PerSecond), rl.Burst)
		l.m[name] = lim
		return lim
	}
	if lim.Limit() != rate.Limit(rl.PerSecond) {
		lim.SetLimit(rate.Limit(rl.PerSecond))
	}
	if lim.Burst() != rl.Burst {
		lim.SetBurst(rl.Burst)
	}
	return lim
}

// NewSources prepares a pipeline's sources; an error names the source whose
// provider has no scheme.
func (h *Handler) NewSources(p *config.Pipeline) (*Sources, error) {
	s := &Sources{byName: make(map[string]*source, len(p.Sources))}
	for i := range p.Sources {
		c := &p.Sources[i]
		prov, err := verify.ForSource(c)
		if err != nil {
			return nil, err
		}
		s.byName[c.Name] = &source{cfg: c, provider: prov, limiter: h.limiters.get(c.Name, c.RateLimit),
			unverified: h.unverified.get(c.Name, config.RateLimit{PerSecond: h.o.UnverifiedPerSecond, Burst: h.o.UnverifiedBurst}),
			kept:       keptHeadersOf(prov.KeepHeaders), reads: readHeaders(prov)}
	}
	return s, nil
}

// Len is the number of sources.
func (s *Sources) Len() int { return len(s.byName) }

// retryAfter is how long a client should wait for the next token of a bucket
// refilling at perSecond, in whole seconds (at least 1).
func retryAfter(perSecond float64) string {
	if perSecond <= 0 {
		return "60"
	}
	return fmt.Sprint(int(math.Max(1, math.Ceil(1/perSecond))))
}
