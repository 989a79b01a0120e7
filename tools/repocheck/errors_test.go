package repocheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// No code classifies an error by its message: errors are typed where they
// are made (libs/fault, sentinels, error types) and told apart with
// errors.Is/As.
func TestNoErrorIsClassifiedByItsMessage(t *testing.T) {
	bad := regexp.MustCompile(`strings\.(Contains|HasPrefix|HasSuffix|EqualFold)\(\s*\w+\.Error\(\)|\.Error\(\)\s*==|==\s*\w+\.Error\(\)`)
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
		for i, line := range strings.Split(string(b), "\n") {
			if bad.MatchString(line) {
				rel, _ := filepath.Rel(r, path)
				t.Errorf("%s:%d classifies an error by its message: %s", rel, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
