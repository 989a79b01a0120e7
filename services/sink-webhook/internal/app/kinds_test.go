package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every destination kind this service hosts has its package, its fake of
// the vendor API with a server for `make run`, and a test that runs the
// destination contract (sinktest.Run) against that fake
// (docs/destinations.md).
func TestEveryKindRunsTheContract(t *testing.T) {
	root := filepath.Join("..", "..", "..", "..")
	seen := map[string]bool{}
	for _, k := range Kinds {
		if seen[k.Name] || k.Name == "" || k.Name == "warehouse" || k.Name == "webhook" {
			t.Errorf("kind %q: names must be unique and not warehouse or webhook", k.Name)
		}
		seen[k.Name] = true
		if _, err := os.Stat(filepath.Join(root, "libs", "destinations", k.Name)); err != nil {
			t.Errorf("kind %s: no package libs/destinations/%s", k.Name, k.Name)
		}
		if _, err := os.Stat(filepath.Join(root, "tools", "fakes", k.Name, "cmd", k.Name+"server")); err != nil {
			t.Errorf("kind %s: no fake server tools/fakes/%s/cmd/%sserver", k.Name, k.Name, k.Name)
		}
		b, err := os.ReadFile(filepath.Join(root, "tools", "fakes", k.Name, "contract_test.go"))
		if err != nil || !strings.Contains(string(b), "sinktest.Run(") {
			t.Errorf("kind %s: tools/fakes/%s/contract_test.go must run sinktest.Run against the fake", k.Name, k.Name)
		}
	}
}
