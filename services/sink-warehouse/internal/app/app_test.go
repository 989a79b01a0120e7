package app

import (
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
	// No pipeline file: Load reports it and still returns what it read.
	base := map[string]string{"DATABASE_URL": "postgres://u@h:5432/db", "KAFKA_BROKERS": "a:1", "PIPELINE_CONFIG": "/nonexistent"}
	c, _ := Load(config.FromMap(base))
	if c.Sink.Concurrency != 1 {
		t.Errorf("default SINK_CONCURRENCY = %d, want 1", c.Sink.Concurrency)
	}
	base["SINK_CONCURRENCY"] = "0"
	c, _ = Load(config.FromMap(base))
	if c.Sink.Concurrency != 0 {
		t.Errorf("SINK_CONCURRENCY=0 gave %d", c.Sink.Concurrency)
	}
}
