package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"go.yaml.in/yaml/v3"

	"github.com/closedloop/closedloop/tools/internal/instruments"
)

const root = "../.."

// The committed files are what this program writes (the canonical copy and
// the chart's).
func TestTheDashboardFilesAreUpToDate(t *testing.T) {
	for _, d := range Dashboards() {
		want, err := Render(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range Dirs {
			got, err := os.ReadFile(filepath.Join(root, dir, d.File))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s/%s is not up to date: run go run ./tools/dashboards", dir, d.File)
			}
		}
	}
}

// Each file loads as a Grafana dashboard: strictly (no field Grafana's
// dashboard schema does not know) and valid by that schema, through
// Grafana's own Go types (grafana-foundation-sdk, generated from the
// schema Grafana validates with).
func TestEachFileLoadsAsAGrafanaDashboard(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	for _, d := range Dashboards() {
		b, err := os.ReadFile(filepath.Join(root, Dirs[0], d.File))
		if err != nil {
			t.Fatal(err)
		}
		var dash dashboard.Dashboard
		if err := noErrors(dash.UnmarshalJSONStrict(b)); err != nil {
			t.Fatalf("%s: not a Grafana dashboard: %v", d.File, err)
		}
		if err := noErrors(dash.Validate()); err != nil {
			t.Fatalf("%s: invalid: %v", d.File, err)
		}
		if dash.Uid == nil || *dash.Uid != d.UID || dash.Title == nil || len(dash.Panels) == 0 {
			t.Fatalf("%s: uid, title or panels missing", d.File)
		}
	}
}

// noErrors turns the SDK's empty error list (a nil cog.BuildErrors in a
// non-nil error) into nil.
func noErrors(err error) error {
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		return nil
	}
	return err
}

var varRE = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// Every query selects series the code makes (or the rules record), uses
// only variables the dashboard defines, and panels do not overlap.
func TestEveryQuerySelectsSeriesThatExist(t *testing.T) {
	ins, err := instruments.Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	known, err := instruments.SeriesSet(ins)
	if err != nil {
		t.Fatal(err)
	}
	recorded := recordedSeries(t)
	used := 0
	for _, d := range Dashboards() {
		vars := map[string]bool{"datasource": true, "__rate_interval": true, "__range": true, "__interval": true}
		for _, v := range d.Variables {
			vars[v.Name] = true
		}
		check := func(where, expr string) {
			for _, m := range instruments.MetricsIn(expr) {
				used++
				if _, ok := known[m]; !ok && !recorded[m] && !instruments.External(m) {
					t.Errorf("%s: %s: %s is no series the code makes nor one the rules record", d.File, where, m)
				}
			}
			for _, v := range varRE.FindAllStringSubmatch(expr, -1) {
				if !vars[v[1]] {
					t.Errorf("%s: %s: variable $%s is not defined", d.File, where, v[1])
				}
			}
		}
		for _, v := range d.Variables {
			// label_values(<series selector>, <label>)
			sel, _, _ := strings.Cut(strings.TrimPrefix(v.Query, "label_values("), ",")
			check("variable "+v.Name, sel)
		}
		for _, r := range d.Rows {
			for _, p := range r.Panels {
				if len(p.Queries) == 0 || p.Description == "" || p.Unit == "" {
					t.Errorf("%s: panel %q needs queries, a description and a unit", d.File, p.Title)
				}
				for _, q := range p.Queries {
					check("panel "+p.Title, q.Expr)
				}
			}
		}
	}
	if used < 30 {
		t.Fatalf("only %d metric references found", used)
	}
}

func recordedSeries(t *testing.T) map[string]bool {
	b, err := os.ReadFile(filepath.Join(root, "deploy/alerts/closedloop.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				out[r.Record] = true
			}
		}
	}
	return out
}

// docs/observability.md stays true: it lists every instrument the code
// registers and every alert the rules define, and every panel it names (in
// quotes) is a panel of the dashboards.
func TestTheObservabilityPageNamesWhatExists(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "docs/observability.md"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	ins, err := instruments.Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if !strings.Contains(page, "`"+in.Name+"`") {
			t.Errorf("docs/observability.md does not list the instrument %s (%s)", in.Name, in.Pos)
		}
	}
	rb, err := os.ReadFile(filepath.Join(root, "deploy/alerts/closedloop.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s+- alert: (\w+)`).FindAllStringSubmatch(string(rb), -1) {
		name := m[1]
		if strings.HasSuffix(name, "Down") {
			name = "Closedloop<Service>Down"
		}
		if strings.HasSuffix(name, "BurnSlow") {
			name = "…Slow"
		}
		if !strings.Contains(page, "`"+name+"`") {
			t.Errorf("docs/observability.md does not say which question the alert %s answers", m[1])
		}
	}
	titles := map[string]bool{}
	for _, d := range Dashboards() {
		for _, r := range d.Rows {
			for _, p := range r.Panels {
				titles[p.Title] = true
			}
		}
	}
	// The panel column of the questions table.
	named := 0
	for _, row := range strings.Split(page, "\n") {
		cells := strings.Split(row, " | ")
		if !strings.HasPrefix(row, "| ") || len(cells) < 5 {
			continue
		}
		for _, m := range regexp.MustCompile(`"([^"]+)"`).FindAllStringSubmatch(cells[1], -1) {
			named++
			if !titles[m[1]] {
				t.Errorf("docs/observability.md names the panel %q, which no dashboard has", m[1])
			}
		}
	}
	if named < 15 {
		t.Fatalf("only %d panels named in the page", named)
	}
}
