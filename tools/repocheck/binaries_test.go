package repocheck

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// No build output is committed: no tracked file is an executable (ELF or
// Mach-O) or larger than 1 MiB.
func TestNoBuildOutputIsTracked(t *testing.T) {
	r := root(t)
	out, err := exec.Command("git", "-C", r, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files (the check needs a git checkout): %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		path := filepath.Join(r, f)
		st, err := os.Stat(path)
		if err != nil || st.IsDir() {
			continue // deleted in the working tree
		}
		if st.Size() > 1<<20 {
			t.Errorf("%s is %d bytes: build outputs and data dumps do not belong in the repository", f, st.Size())
		}
		fh, err := os.Open(path)
		if err != nil {
			continue
		}
		head := make([]byte, 4)
		n, _ := fh.Read(head)
		_ = fh.Close()
		if n == 4 && (bytes.Equal(head, []byte("\x7fELF")) || bytes.Equal(head, []byte{0xcf, 0xfa, 0xed, 0xfe})) {
			t.Errorf("%s is a compiled binary: remove it and ignore it in .gitignore", f)
		}
	}
}
