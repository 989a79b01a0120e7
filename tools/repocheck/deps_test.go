// Package repocheck holds checks over the whole repository that belong to
// no one module.
package repocheck

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// retired are modules the project does not use, and why.
var retired = map[string]string{
	"gopkg.in/yaml.v3": "archived; its maintained successor is go.yaml.in/yaml/v3",
}

func root(t *testing.T) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..")
}

// requires reads the require lines of a go.mod: module -> version.
func requires(t *testing.T, path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(strings.SplitN(sc.Text(), "//", 2)[0])
		switch {
		case line == "require (":
			in = true
			continue
		case in && line == ")":
			in = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
		case !in:
			continue
		}
		if fs := strings.Fields(line); len(fs) == 2 {
			out[fs[0]] = fs[1]
		}
	}
	return out
}

// Every module of the workspace requires the same version of each
// dependency (go work sync keeps it so), and none requires a retired module.
func TestOneVersionOfEachDependency(t *testing.T) {
	r := root(t)
	work, err := os.ReadFile(filepath.Join(r, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	var mods []string
	for _, l := range strings.Split(string(work), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "./") || strings.HasPrefix(l, "use ./") {
			mods = append(mods, strings.TrimPrefix(l, "use "))
		}
	}
	if len(mods) < 5 {
		t.Fatalf("go.work lists %d modules: %v", len(mods), mods)
	}
	versions := map[string]map[string][]string{} // dep -> version -> modules
	for _, m := range mods {
		for dep, v := range requires(t, filepath.Join(r, m, "go.mod")) {
			if why, bad := retired[dep]; bad {
				t.Errorf("%s requires %s: %s", m, dep, why)
			}
			if versions[dep] == nil {
				versions[dep] = map[string][]string{}
			}
			versions[dep][v] = append(versions[dep][v], m)
		}
	}
	var deps []string
	for d := range versions {
		deps = append(deps, d)
	}
	sort.Strings(deps)
	for _, d := range deps {
		if len(versions[d]) > 1 {
			t.Errorf("%s in several versions: %v (run go work sync)", d, versions[d])
		}
	}
}

// The contract module is what other teams depend on: its go.mod has no
// replace directive and needs nothing but protobuf, gRPC and vtprotobuf (the
// runtime of FeedbackEvent's generated encoder, at the version gRPC itself
// requires, so a consumer's module graph gains nothing).
func TestTheContractModuleStandsAlone(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(t), "proto", "gen", "go", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	direct := map[string]bool{"google.golang.org/protobuf": true, "google.golang.org/grpc": true, "github.com/planetscale/vtprotobuf": true}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "replace") {
			t.Errorf("proto/gen/go/go.mod: %q: a consumer's go get would not honour it", line)
		}
		if strings.HasPrefix(line, "github.com/closedloop/") {
			t.Errorf("proto/gen/go/go.mod requires %q: the contract must not pull closedloop's code", line)
		}
		f := strings.Fields(strings.TrimPrefix(line, "require "))
		if len(f) == 2 && strings.Contains(f[0], ".") && !direct[f[0]] { // "path version", no "// indirect"
			t.Errorf("proto/gen/go/go.mod requires %s directly: the contract needs only protobuf, gRPC and vtprotobuf", f[0])
		}
	}
}
