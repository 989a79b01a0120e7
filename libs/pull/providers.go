package pull

import (
	"net/http"
	"sort"

	"github.com/closedloop/closedloop/libs/fault"
)

// Options are what a source's api block gives a lister.
type Options struct {
	BaseURL string
	// Key is the API key (Delighted) or personal access token (Typeform).
	Key string
	// Forms are Typeform's form ids.
	Forms   []string
	Partial bool
	Limiter *Limiter
	HTTP    *http.Client
}

// provider is one provider whose history can be read.
type provider struct {
	// Rate is its documented (or, where undocumented, a conservative)
	// requests per second: the default of api.rate_per_second.
	Rate  int
	New   func(Options) (Lister, error)
	Forms bool // needs form ids
}

// providers is the one table of providers with an API lister.
var providers = map[string]provider{
	"delighted": {Rate: 5, New: func(o Options) (Lister, error) {
		return NewDelighted(DelightedOptions{BaseURL: o.BaseURL, APIKey: o.Key, Limiter: o.Limiter, HTTP: o.HTTP})
	}},
	"typeform": {Rate: 2, Forms: true, New: func(o Options) (Lister, error) {
		return NewTypeform(TypeformOptions{BaseURL: o.BaseURL, Token: o.Key, Forms: o.Forms, Partial: o.Partial, Limiter: o.Limiter, HTTP: o.HTTP})
	}},
}

// Supported lists the providers with a lister, sorted.
func Supported() []string {
	out := make([]string, 0, len(providers))
	for p := range providers {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// DefaultRate is a provider's default requests per second (0: unknown).
func DefaultRate(name string) int { return providers[name].Rate }

// NeedsForms reports whether the provider's lister needs form ids.
func NeedsForms(name string) bool { return providers[name].Forms }

// For returns the lister of a provider.
func For(name string, o Options) (Lister, error) {
	p, ok := providers[name]
	if !ok {
		return nil, fault.Errorf(fault.Invalid, "provider %q has no API lister (supported: %v)", name, Supported())
	}
	return p.New(o)
}
