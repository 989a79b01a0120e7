package stack

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The benchmarks and end-to-end tests run the services with the image's
// environment; a change to one without the other would measure something
// that is not deployed.
func TestImageEnvIsTheDockerfiles(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	stage := 0
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "FROM ") {
			stage++
		}
		if v, ok := strings.CutPrefix(line, "ENV "); ok && stage == 2 { // the runtime stage
			env = append(env, strings.Fields(v)...)
		}
	}
	if !slices.Equal(env, ImageEnv) {
		t.Errorf("the Dockerfile's runtime stage sets %q, stack.ImageEnv is %q", env, ImageEnv)
	}
}

func TestServicesGetTheImageEnv(t *testing.T) {
	for bin, want := range map[string]bool{
		"/tmp/x/ingress": true, "/tmp/x/sink-warehouse": true, "/tmp/x/normalizer": true,
		"/tmp/x/devbroker": false, "/tmp/x/crmserver": false, "/tmp/x/unknown": false,
	} {
		if got := isService(bin); got != want {
			t.Errorf("isService(%s) = %v", bin, got)
		}
	}
}
