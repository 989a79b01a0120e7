// Package instruments lists the OpenTelemetry instruments the code
// registers, by reading the Go sources (no build needed): the name, kind,
// unit, description and bucket boundaries of every meter.XxxCounter/
// Histogram/Gauge call, and the series names the Prometheus exporter makes
// of them. repocheck holds every instrument to the naming rules; helmcheck
// and the dashboard check hold every alert and panel query to the series
// that exist.
package instruments

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/otlptranslator"
)

// Instrument is one registration in the code.
type Instrument struct {
	Name string
	// Kind is the meter method: Int64Counter, Float64Histogram,
	// Int64ObservableGauge, ...
	Kind        string
	Unit        string
	Description string
	// Buckets is the source text of WithExplicitBucketBoundaries' arguments
	// ("" when the call has none).
	Buckets string
	// Pos is file:line, relative to the scanned root.
	Pos string
}

var kinds = map[string]otlptranslator.MetricType{}

func init() {
	for _, n := range []string{"Int64", "Float64"} {
		kinds[n+"Counter"] = otlptranslator.MetricTypeMonotonicCounter
		kinds[n+"ObservableCounter"] = otlptranslator.MetricTypeMonotonicCounter
		kinds[n+"UpDownCounter"] = otlptranslator.MetricTypeNonMonotonicCounter
		kinds[n+"ObservableUpDownCounter"] = otlptranslator.MetricTypeNonMonotonicCounter
		kinds[n+"Gauge"] = otlptranslator.MetricTypeGauge
		kinds[n+"ObservableGauge"] = otlptranslator.MetricTypeGauge
		kinds[n+"Histogram"] = otlptranslator.MetricTypeHistogram
	}
}

// IsHistogram reports whether the instrument is a histogram.
func (i Instrument) IsHistogram() bool { return kinds[i.Kind] == otlptranslator.MetricTypeHistogram }

// Series returns the Prometheus series names the exporter serves for it
// (a histogram's _bucket, _sum and _count; a counter's _total).
func (i Instrument) Series() ([]string, error) {
	namer := otlptranslator.NewMetricNamer("", otlptranslator.UnderscoreEscapingWithSuffixes)
	base, err := namer.Build(otlptranslator.Metric{Name: i.Name, Unit: i.Unit, Type: kinds[i.Kind]})
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", i.Pos, i.Name, err)
	}
	if i.IsHistogram() {
		return []string{base + "_bucket", base + "_sum", base + "_count"}, nil
	}
	return []string{base}, nil
}

// Scan reads every non-test Go file under root (skipping hidden
// directories, generated code and node_modules).
func Scan(root string) ([]Instrument, error) {
	fset := token.NewFileSet()
	var files []*ast.File
	var rels []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "gen" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files, rels = append(files, f), append(rels, rel)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// String constants by name (an instrument named by a constant, such as
	// telemetry.FreshnessName).
	consts := map[string]string{}
	for _, f := range files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if s, ok := stringLit(vs.Values[i]); ok {
							consts[n.Name] = s
						}
					}
				}
			}
		}
	}
	var out []Instrument
	for fi, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if _, ok := kinds[sel.Sel.Name]; !ok {
				return true
			}
			name, ok := stringLit(call.Args[0])
			if !ok {
				var id string
				switch a := call.Args[0].(type) {
				case *ast.Ident:
					id = a.Name
				case *ast.SelectorExpr:
					id = a.Sel.Name
				}
				if name, ok = consts[id]; !ok {
					return true // not a meter call (or a name we cannot see)
				}
			}
			in := Instrument{Name: name, Kind: sel.Sel.Name, Pos: rels[fi] + ":" + strconv.Itoa(fset.Position(call.Pos()).Line)}
			for _, opt := range call.Args[1:] {
				oc, ok := opt.(*ast.CallExpr)
				if !ok {
					continue
				}
				os, ok := oc.Fun.(*ast.SelectorExpr)
				if !ok {
					continue
				}
				switch os.Sel.Name {
				case "WithUnit":
					if len(oc.Args) == 1 {
						in.Unit, _ = stringLit(oc.Args[0])
					}
				case "WithDescription":
					if len(oc.Args) == 1 {
						in.Description, _ = stringLit(oc.Args[0])
					}
				case "WithExplicitBucketBoundaries":
					var parts []string
					for _, a := range oc.Args {
						parts = append(parts, exprText(a))
					}
					in.Buckets = strings.Join(parts, ", ")
					if oc.Ellipsis.IsValid() {
						in.Buckets += "..."
					}
				}
			}
			out = append(out, in)
			return true
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Pos < out[j].Pos
	})
	return out, nil
}

// SeriesSet returns every series name the instruments make.
func SeriesSet(ins []Instrument) (map[string]Instrument, error) {
	out := map[string]Instrument{}
	for _, in := range ins {
		names, err := in.Series()
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			out[n] = in
		}
	}
	return out, nil
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

func exprText(e ast.Expr) string {
	switch v := e.(type) {
	case *ast.BasicLit:
		return v.Value
	case *ast.Ident:
		return v.Name
	case *ast.SelectorExpr:
		return exprText(v.X) + "." + v.Sel.Name
	case *ast.UnaryExpr:
		return v.Op.String() + exprText(v.X)
	default:
		return fmt.Sprintf("%T", e)
	}
}
