package kafkaio

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// Every permanent error names a reason of the vocabulary: no literal reason
// anywhere in the code (a second name for one thing, as undecodable_record
// and undecodable_event once were, cannot creep back).
func TestEveryReasonIsOfTheVocabulary(t *testing.T) {
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	literal := regexp.MustCompile(`Permanentf?\(\s*"`)
	seen := map[string]bool{}
	for _, r := range Reasons {
		if seen[r] || !regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`).MatchString(r) {
			t.Errorf("reason %q is repeated or not snake_case", r)
		}
		seen[r] = true
	}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if loc := literal.FindIndex(b); loc != nil {
			t.Errorf("%s: a permanent error with a literal reason; use a kafkaio.Reason* constant", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
