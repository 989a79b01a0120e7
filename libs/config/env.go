// Package config loads a service's configuration: addresses and knobs from
// the environment, the pipeline definition (sources, sinks) from YAML, and
// secrets by reference (env:NAME or file:PATH) so that no secret is ever
// written in the YAML, printed or logged.
//
// Every loader collects all problems before returning, so a person fixing a
// deployment sees every mistake at once, each naming the variable or YAML
// path to change.
package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Env reads typed values from environment variables and remembers every
// problem. Call Err after the last read.
type Env struct {
	lookup func(string) (string, bool)
	errs   []error
}

// FromEnviron reads the process environment.
func FromEnviron() *Env { return &Env{lookup: os.LookupEnv} }

// FromMap reads the given map; for tests.
func FromMap(m map[string]string) *Env {
	return &Env{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func (e *Env) get(name string) (string, bool) {
	v, ok := e.lookup(name)
	if !ok {
		return "", false
	}
	v = strings.TrimSpace(v)
	return v, v != ""
}

// Errorf records a problem found by the caller's own validation.
func (e *Env) Errorf(format string, args ...any) {
	e.errs = append(e.errs, fmt.Errorf(format, args...))
}

// String returns the variable or def when it is unset or empty.
func (e *Env) String(name, def string) string {
	if v, ok := e.get(name); ok {
		return v
	}
	return def
}

// Required returns the variable and records an error when it is unset.
func (e *Env) Required(name, what string) string {
	v, ok := e.get(name)
	if !ok {
		e.Errorf("%s is not set: it must name %s", name, what)
	}
	return v
}

// List splits a comma-separated variable, dropping empty items.
func (e *Env) List(name string, def []string) []string {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Int returns the variable as an integer, or def.
func (e *Env) Int(name string, def int) int {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.Errorf("%s=%q is not an integer", name, v)
		return def
	}
	return n
}

// Float returns the variable as a number, or def.
func (e *Env) Float(name string, def float64) float64 {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		e.Errorf("%s=%q is not a number", name, v)
		return def
	}
	return f
}

// Bool returns the variable as a boolean (1/0, true/false, yes/no), or def.
func (e *Env) Bool(name string, def bool) bool {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	e.Errorf("%s=%q is not a boolean (use true or false)", name, v)
	return def
}

// Duration returns the variable as a Go duration ("250ms", "3s", "72h"), or def.
func (e *Env) Duration(name string, def time.Duration) time.Duration {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		e.Errorf("%s=%q is not a duration such as 500ms, 3s or 72h", name, v)
		return def
	}
	return d
}

// Err returns every recorded problem joined, or nil.
func (e *Env) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid configuration:\n  - %w", errors.Join(e.errs...))
}

// Secret resolves the secret reference (env:NAME or file:PATH) held by
// variable name; ok is false when the variable is unset (or the reference
// is wrong: then the problem is recorded).
func (e *Env) Secret(name string) (s Secret, ok bool) {
	ref, set := e.get(name)
	if !set {
		return Secret{}, false
	}
	s, err := ResolveSecret(ref, e.lookup)
	if err != nil {
		e.Errorf("%s: %v", name, err)
		return Secret{}, false
	}
	return s, true
}
