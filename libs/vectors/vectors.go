// Package vectors loads the signed webhook test vectors
// (testdata/webhooks/vectors.json, or the file named by CLOSEDLOOP_VECTORS)
// that the conformance tests of the ingress and normalizer run.
package vectors

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File is the vectors file.
type File struct {
	About   string   `json:"about"`
	Now     int64    `json:"now"`
	Vectors []Vector `json:"vectors"`
}

// Vector is one signed request with its expected outcome.
type Vector struct {
	Name     string   `json:"name"`
	Provider string   `json:"provider"`
	Secrets  []string `json:"secrets"`
	Now      int64    `json:"now"`
	Request  struct {
		Method     string            `json:"method"`
		Headers    map[string]string `json:"headers"`
		Body       string            `json:"body"`
		BodySHA256 string            `json:"body_sha256"`
	} `json:"request"`
	Expect Expect `json:"expect"`
	Note   string `json:"note"`
}

// Expect is the verdict and meaning a vector must produce.
type Expect struct {
	Verdict     string         `json:"verdict"`
	Status      int            `json:"status"`
	Reason      string         `json:"reason"`
	EventID     string         `json:"event_id"`
	EventType   string         `json:"event_type"`
	DuplicateOf string         `json:"duplicate_of"`
	Quarantine  string         `json:"quarantine"`
	Canonical   map[string]any `json:"canonical"`
}

// Path returns CLOSEDLOOP_VECTORS when set, else testdata/webhooks/vectors.json
// found by walking up from the working directory to the repository root.
func Path() (string, error) {
	if p := os.Getenv("CLOSEDLOOP_VECTORS"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "testdata", "webhooks", "vectors.json")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testdata/webhooks/vectors.json not found above the working directory; set CLOSEDLOOP_VECTORS")
		}
		dir = parent
	}
}

// Load reads the vectors: the file CLOSEDLOOP_VECTORS names, alone; else
// testdata/webhooks/vectors.json (the copy of the shared vectors) and every
// other *.json beside it (the project's own vectors, such as closedloop.json),
// merged in name order. Vector names are unique across the files.
func Load() (*File, string, error) {
	p, err := Path()
	if err != nil {
		return nil, "", err
	}
	files := []string{p}
	if os.Getenv("CLOSEDLOOP_VECTORS") == "" {
		more, _ := filepath.Glob(filepath.Join(filepath.Dir(p), "*.json"))
		sort.Strings(more)
		for _, m := range more {
			if m != p {
				files = append(files, m)
			}
		}
	}
	var all File
	seen := map[string]string{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, name, err
		}
		var f File
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, name, fmt.Errorf("%s: %w", name, err)
		}
		if len(f.Vectors) == 0 {
			return nil, name, fmt.Errorf("%s holds no vectors", name)
		}
		for i := range f.Vectors {
			v := &f.Vectors[i]
			if other, dup := seen[v.Name]; dup {
				return nil, name, fmt.Errorf("%s: vector %s is also in %s", name, v.Name, other)
			}
			seen[v.Name] = name
			if v.Now == 0 {
				v.Now = f.Now
			}
		}
		if all.About == "" {
			all.About, all.Now = f.About, f.Now
		}
		all.Vectors = append(all.Vectors, f.Vectors...)
	}
	return &all, strings.Join(files, ", "), nil
}
