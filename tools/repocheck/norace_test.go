package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// make unit runs the packages in the Makefile's NORACE_PKGS without -race.
// That is only sound while neither their code nor their tests start a
// goroutine: a go statement there fails this check.
func TestThePackagesTestedWithoutRaceStartNoGoroutine(t *testing.T) {
	r := root(t)
	mk, err := os.ReadFile(filepath.Join(r, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^NORACE_PKGS\s*:?=\s*(.*)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("the Makefile has no NORACE_PKGS")
	}
	for _, pkg := range strings.Fields(string(m[1])) {
		dir := filepath.Join(r, pkg)
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("NORACE_PKGS names %s, which has no Go files", pkg)
		}
		for _, f := range files {
			file, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				if _, ok := n.(*ast.GoStmt); ok {
					rel, _ := filepath.Rel(r, f)
					t.Errorf("%s starts a goroutine: take %s out of NORACE_PKGS so that make unit runs it with -race", rel, pkg)
				}
				return true
			})
		}
	}
}
