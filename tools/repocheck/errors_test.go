package repocheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// eachSourceFile calls fn with every non-test, non-generated Go file of the
// repository (path relative to the root, its content).
func eachSourceFile(t *testing.T, fn func(rel, src string)) {
	t.Helper()
	r := root(t)
	err := filepath.WalkDir(r, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "gen") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(r, path)
		fn(rel, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// eachSourceLine calls fn with every line of those files (1-based number).
func eachSourceLine(t *testing.T, fn func(rel string, n int, line string)) {
	t.Helper()
	eachSourceFile(t, func(rel, src string) {
		for i, line := range strings.Split(src, "\n") {
			fn(rel, i+1, line)
		}
	})
}

// No code classifies an error by its message: errors are typed where they
// are made (libs/fault, sentinels, error types) and told apart with
// errors.Is/As.
func TestNoErrorIsClassifiedByItsMessage(t *testing.T) {
	bad := regexp.MustCompile(`strings\.(Contains|HasPrefix|HasSuffix|EqualFold)\(\s*\w+\.Error\(\)|\.Error\(\)\s*==|==\s*\w+\.Error\(\)`)
	eachSourceLine(t, func(rel string, n int, line string) {
		if bad.MatchString(line) {
			t.Errorf("%s:%d classifies an error by its message: %s", rel, n, strings.TrimSpace(line))
		}
	})
}
