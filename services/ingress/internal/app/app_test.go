package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closedloop/closedloop/libs/config"
)

func TestAStartWithNothingSetNamesEveryMissingSetting(t *testing.T) {
	_, err := Load(config.FromMap(nil), func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"KAFKA_BROKERS", "PIPELINE_CONFIG"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestAValidEnvironmentLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	_ = os.WriteFile(path, []byte("sources:\n  - name: dl\n    provider: delighted\n    secrets: [env:K]\n    ingest_tokens: [env:T]\n"), 0o600)
	env := map[string]string{"KAFKA_BROKERS": "a:9092,b:9092", "PIPELINE_CONFIG": path, "INGRESS_PRODUCE_TIMEOUT": "2s"}
	secrets := map[string]string{"K": "key", "T": "tok_0123456789abcdefghijklmn"}
	c, err := Load(config.FromMap(env), func(k string) (string, bool) { v, ok := secrets[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Common.Brokers) != 2 || c.ProduceTimeout.Seconds() != 2 || c.Addr != ":8080" || len(c.Pipeline.Current().Sources) != 1 {
		t.Fatalf("config = %+v", c)
	}
}

func TestAProduceTimeoutPastTheProvidersDeadlineIsRefused(t *testing.T) {
	_, err := Load(config.FromMap(map[string]string{"KAFKA_BROKERS": "a:1", "INGRESS_PRODUCE_TIMEOUT": "10s"}), nil)
	if err == nil || !strings.Contains(err.Error(), "INGRESS_PRODUCE_TIMEOUT") {
		t.Fatalf("err = %v", err)
	}
}
