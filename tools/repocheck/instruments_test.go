package repocheck

import (
	"regexp"
	"strings"
	"testing"

	"github.com/closedloop/closedloop/tools/internal/instruments"
)

// semconv are the OpenTelemetry semantic-convention instruments the code
// registers, with their conventional unit and kind; everything else is
// closedloop.*.
var semconv = map[string]struct{ unit, kind string }{
	"http.server.request.duration": {"s", "Float64Histogram"},
}

var (
	ownName = regexp.MustCompile(`^closedloop(\.[a-z][a-z0-9_]*)+$`)
	// UCUM units as the conventions use them: seconds, bytes, a ratio, or
	// an annotation of what is counted ({record}).
	unitRE = regexp.MustCompile(`^(s|By|1|\{[a-z_]+\})$`)
)

// Every instrument is named by the conventions (its semantic-convention
// name, else closedloop.<area>.<what>, never with a unit or _total in the
// name, which the Prometheus exporter adds), has a unit, a description and,
// for a histogram, explicit bucket boundaries (the SDK's default, 0 to
// 10,000, makes a percentile of milliseconds meaningless); an instrument
// registered in two places is registered the same way; no two instruments
// make the same Prometheus series.
func TestEveryInstrumentIsNamedUnitedAndBucketed(t *testing.T) {
	ins, err := instruments.Scan(root(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) < 30 {
		t.Fatalf("only %d instruments found: is the scanner still seeing the meter calls?", len(ins))
	}
	first := map[string]instruments.Instrument{}
	series := map[string]string{}
	for _, in := range ins {
		if sc, ok := semconv[in.Name]; ok {
			if in.Unit != sc.unit || in.Kind != sc.kind {
				t.Errorf("%s: %s is a %s in %q by the conventions, not a %s in %q", in.Pos, in.Name, sc.kind, sc.unit, in.Kind, in.Unit)
			}
		} else if !ownName.MatchString(in.Name) {
			t.Errorf("%s: %q: name instruments closedloop.<area>.<what> (lower case, dots between the parts) or by their semantic convention", in.Pos, in.Name)
		}
		for _, suffix := range []string{"_total", "_seconds", "_bytes", ".seconds", ".bytes", "_count", "_sum", "_bucket"} {
			if strings.HasSuffix(in.Name, suffix) {
				t.Errorf("%s: %q ends in %s: the unit and the counter suffix are the exporter's to add", in.Pos, in.Name, suffix)
			}
		}
		if !unitRE.MatchString(in.Unit) {
			t.Errorf("%s: %s has unit %q: give one (s, By, 1 or {what is counted})", in.Pos, in.Name, in.Unit)
		}
		if in.Description == "" {
			t.Errorf("%s: %s has no description", in.Pos, in.Name)
		}
		if in.IsHistogram() != (in.Buckets != "") {
			t.Errorf("%s: %s: a histogram and only a histogram names its bucket boundaries (buckets %q)", in.Pos, in.Name, in.Buckets)
		}
		if in.IsHistogram() && in.Unit == "s" && !strings.Contains(in.Buckets, "Seconds") && !strings.Contains(in.Buckets, "0.") {
			t.Errorf("%s: %s is in seconds but its buckets (%s) are not", in.Pos, in.Name, in.Buckets)
		}
		if f, ok := first[in.Name]; ok {
			if f.Kind != in.Kind || f.Unit != in.Unit || f.Description != in.Description || f.Buckets != in.Buckets {
				t.Errorf("%s: %s is registered differently at %s (kind, unit, description or buckets)", in.Pos, in.Name, f.Pos)
			}
			continue
		}
		first[in.Name] = in
		names, err := in.Series()
		if err != nil {
			t.Error(err)
			continue
		}
		for _, n := range names {
			if other, dup := series[n]; dup {
				t.Errorf("%s: %s and %s both become the series %s", in.Pos, in.Name, other, n)
			}
			series[n] = in.Name
		}
	}
}
