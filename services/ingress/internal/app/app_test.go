package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/service"
)

func TestAStartWithNothingSetNamesEveryMissingSetting(t *testing.T) {
	_, err := Load(config.FromMap(nil), func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"KAFKA_BROKERS", "PIPELINE_CONFIG", "CLOSEDLOOP_SERVICE_TOKEN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestAValidEnvironmentLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	_ = os.WriteFile(path, []byte("sources:\n  - name: dl\n    provider: delighted\n    secrets: [env:K]\n    ingest_tokens: [env:T]\n"), 0o600)
	env := map[string]string{"KAFKA_BROKERS": "a:9092,b:9092", "PIPELINE_CONFIG": path, "INGRESS_PRODUCE_TIMEOUT": "2s",
		"CLOSEDLOOP_SERVICE_TOKEN": "svc-0123456789abcdef0123456789abcdef"}
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

func TestTheBodyLimitComesFromTheRawTopic(t *testing.T) {
	c := Config{Common: service.Common{Topics: kafkaio.NewTopics("")}}
	if n, err := c.bodyLimit(1048588); err != nil || n != 1048588-EnvelopeReserve {
		t.Fatalf("default limit = %d, %v; want the raw topic's max.message.bytes less the envelope", n, err)
	}
	c.MaxBody = 1 << 20 // what the docs used to promise: cannot be stored
	if _, err := c.bodyLimit(1048588); err == nil || !strings.Contains(err.Error(), "INGRESS_MAX_BODY_BYTES=1048576 cannot be stored") {
		t.Fatalf("err = %v", err)
	}
	c.MaxBody = 500_000
	if n, err := c.bodyLimit(1048588); err != nil || n != 500_000 {
		t.Fatalf("a lower limit = %d, %v", n, err)
	}
	if n, err := c.bodyLimit(8 << 20); err != nil || n != 500_000 {
		t.Fatalf("a lower limit on a larger topic = %d, %v", n, err)
	}
}

func TestAShortServiceTokenIsRefused(t *testing.T) {
	_, err := Load(config.FromMap(map[string]string{"KAFKA_BROKERS": "a:1", "CLOSEDLOOP_SERVICE_TOKEN": "short"}), nil)
	if err == nil || !strings.Contains(err.Error(), "token 1 has 5 characters") {
		t.Fatalf("err = %v", err)
	}
}
