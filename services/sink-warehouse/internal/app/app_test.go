package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closedloop/closedloop/libs/config"
)

func TestAStartWithNothingSetNamesEveryMissingSetting(t *testing.T) {
	_, err := Load(config.FromMap(nil))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"KAFKA_BROKERS", "DATABASE_URL", "PIPELINE_CONFIG"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestADatabaseURLThatIsNotPostgresIsReported(t *testing.T) {
	_, err := Load(config.FromMap(map[string]string{"DATABASE_URL": "mysql://x:y@z:3306/db", "KAFKA_BROKERS": "a:1"}))
	if err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("err = %v", err)
	}
}

func TestOneInsertAtATimeUnlessConfigured(t *testing.T) {
	pipeline := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(pipeline, []byte("sources: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{"DATABASE_URL": "postgres://u@h:5432/db", "KAFKA_BROKERS": "a:1", "PIPELINE_CONFIG": pipeline,
		"CLOSEDLOOP_SERVICE_TOKEN": "svc-0123456789abcdef0123456789abcdef"}
	c, err := Load(config.FromMap(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sink.Concurrency != 1 {
		t.Errorf("default SINK_CONCURRENCY = %d, want 1", c.Sink.Concurrency)
	}
	base["SINK_CONCURRENCY"] = "0"
	if c, err = Load(config.FromMap(base)); err != nil {
		t.Fatal(err)
	}
	if c.Sink.Concurrency != 0 {
		t.Errorf("SINK_CONCURRENCY=0 gave %d", c.Sink.Concurrency)
	}
}
