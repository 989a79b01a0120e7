package instruments

import (
	"regexp"
	"sort"
	"strings"
)

var (
	// Grouping clauses name labels, not metrics: by (a, b), on (a), ...
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	matcherRE  = regexp.MustCompile(`\{[^}]*\}`)
	rangeRE    = regexp.MustCompile(`\[[^\]]*\]`)
	stringRE   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	// Grafana's variables and intervals: $__rate_interval, ${sink}, $source.
	grafanaVarRE = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
	identRE      = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	keywords     = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true, "Inf": true, "NaN": true, "e": true}
)

// MetricsIn returns the metric names a PromQL expression selects (not its
// functions, label names or keywords), sorted and once each.
func MetricsIn(expr string) []string {
	s := stringRE.ReplaceAllString(expr, `""`)
	s = grafanaVarRE.ReplaceAllString(s, "")
	s = matcherRE.ReplaceAllString(s, " ")
	s = rangeRE.ReplaceAllString(s, " ")
	s = groupingRE.ReplaceAllString(s, " ")
	seen := map[string]bool{}
	for _, loc := range identRE.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || keywords[name] {
			continue // a function or aggregation, or a keyword
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // the exponent or unit of a number: 1e-9, 5m
		}
		seen[name] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// External are series a query may select that closedloop does not
// register: Prometheus's own and the Go and process collectors' (every
// service serves them).
func External(name string) bool {
	return name == "up" || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_")
}
