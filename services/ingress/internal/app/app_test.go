package app

import (
	"net/http"
	"net/http/httptest"
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

func TestTheTokenNeverReachesTheTracingLayerButRoutingStillSeesIt(t *testing.T) {
	var seenByTracing, seenByHandler string
	inner := http.NewServeMux()
	inner.HandleFunc("POST /v1/hooks/{source}/{token}", func(w http.ResponseWriter, r *http.Request) { seenByHandler = r.PathValue("token") })
	tracing := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seenByTracing = r.URL.Path + " " + r.RequestURI; next.ServeHTTP(w, r) })
	}
	h := redactToken(tracing(restorePath(inner)))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/hooks/delighted/tok_secret_123", nil))
	if strings.Contains(seenByTracing, "tok_secret_123") || seenByHandler != "tok_secret_123" {
		t.Fatalf("tracing saw %q, handler saw %q", seenByTracing, seenByHandler)
	}
}
