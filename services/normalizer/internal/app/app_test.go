package app

import (
	"strings"
	"testing"

	"github.com/closedloop/closedloop/libs/config"
)

func TestAStartWithNothingSetNamesEveryMissingSetting(t *testing.T) {
	_, err := Load(config.FromMap(map[string]string{"REDIS_URL": ""}))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"KAFKA_BROKERS", "REDIS_URL", "PIPELINE_CONFIG"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestABadRedisURLIsReported(t *testing.T) {
	_, err := Load(config.FromMap(map[string]string{"REDIS_URL": "http://x", "KAFKA_BROKERS": "a:1"}))
	if err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Fatalf("err = %v", err)
	}
}
