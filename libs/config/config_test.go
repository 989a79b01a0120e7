package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func lookupFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const validYAML = `
sources:
  - name: delighted
    provider: delighted
    secrets: [env:DL_KEY, env:DL_KEY_OLD]
    ingest_tokens: [env:DL_TOKEN]
    dedupe_ttl: 24h
sinks:
  warehouse:
    schema: analytics
`

func TestAValidPipelineResolvesSecretsAndAppliesDefaults(t *testing.T) {
	env := map[string]string{"DL_KEY": "k1", "DL_KEY_OLD": "k0", "DL_TOKEN": "tok_abcdefghijklmnopqrstuvwxyz"}
	p, err := ParsePipeline([]byte(validYAML), lookupFrom(env))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := p.Source("delighted")
	if !ok {
		t.Fatal("source delighted not found")
	}
	if len(s.Secrets) != 2 || string(s.Secrets[0].Reveal()) != "k1" || string(s.Secrets[1].Reveal()) != "k0" {
		t.Fatalf("secrets not resolved in order: %v", s.Secrets)
	}
	if s.DedupeTTL.Duration != 24*time.Hour {
		t.Fatalf("dedupe_ttl = %v", s.DedupeTTL)
	}
	if !s.MatchToken("tok_abcdefghijklmnopqrstuvwxyz") || s.MatchToken("tok_abcdefghijklmnopqrstuvwxyZ") || s.MatchToken("") {
		t.Fatal("MatchToken accepts the wrong tokens or refuses the right one")
	}
	if p.Sinks.Warehouse.Schema != "analytics" || p.Sinks.Warehouse.BatchSize != 500 {
		t.Fatalf("warehouse defaults not applied: %+v", p.Sinks.Warehouse)
	}
}

func TestEveryProblemIsReportedAtOnceAndNamesWhereItIs(t *testing.T) {
	yml := `
sources:
  - name: Bad Name
    provider: nosuch
    secrets: ["hunter2"]
    ingest_tokens: [env:SHORT, env:MISSING, env:X]
`
	_, err := ParsePipeline([]byte(yml), lookupFrom(map[string]string{"SHORT": "abc"}))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"name \"Bad Name\"", "provider \"nosuch\"", "literal secrets are not accepted", "at most 2 token", "MISSING is not set", "128 bits"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Error("the error repeats a literal secret value")
	}
}

func TestUnknownKeysAreErrorsNotSilentDefaults(t *testing.T) {
	_, err := ParsePipeline([]byte("sources:\n  - name: a\n    provder: delighted\n"), lookupFrom(nil))
	if err == nil || !strings.Contains(err.Error(), "provder") {
		t.Fatalf("err = %v, want one naming the unknown key", err)
	}
}

func TestFileSecretsDropOneTrailingNewline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ResolveSecret("file:"+path, lookupFrom(nil))
	if err != nil || string(s.Reveal()) != "s3cret" {
		t.Fatalf("got %q, %v", s.Reveal(), err)
	}
}

func TestASecretNeverPrintsItsValue(t *testing.T) {
	s := NewSecret("env:K", []byte("topsecret"))
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), s.LogValue().String()} {
		if strings.Contains(out, "topsecret") {
			t.Fatalf("secret printed: %s", out)
		}
	}
}

func TestEnvCollectsEveryBadValue(t *testing.T) {
	e := FromMap(map[string]string{"A": "x", "B": "soon", "C": "maybe"})
	e.Int("A", 1)
	e.Duration("B", time.Second)
	e.Bool("C", false)
	e.Required("D", "the broker list")
	err := e.Err()
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"A=", "B=", "C=", "D is not set"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}

func TestWithoutALookupReferencesAreCheckedButNotResolved(t *testing.T) {
	p, err := ParsePipeline([]byte(validYAML), nil)
	if err != nil {
		t.Fatalf("a service without secrets could not load the pipeline: %v", err)
	}
	s, _ := p.Source("delighted")
	if len(s.Secrets) != 0 || s.MatchToken("tok_abcdefghijklmnopqrstuvwxyz") {
		t.Fatal("secrets were resolved without a lookup")
	}
	if _, err := ParsePipeline([]byte("sources:\n  - name: a\n    provider: delighted\n    secrets: [hunter2]\n    ingest_tokens: [env:T]\n"), nil); err == nil {
		t.Fatal("a literal secret passed without a lookup")
	}
}

func TestSinkFiltersAreCompiledWhenTheFileLoadsAndTheirMistakesNamed(t *testing.T) {
	ok := `
sinks:
  warehouse:
    filter: 'event.kind != Kind.KIND_TEST'
  webhook:
    endpoints:
      - name: alerts
        url: https://hooks.example.com/in
        secret: env:WH
        filter: 'event.segment == Segment.SEGMENT_DETRACTOR'
`
	p, err := ParsePipeline([]byte(ok), lookupFrom(map[string]string{"WH": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
	if err != nil {
		t.Fatal(err)
	}
	if p.Sinks.Warehouse.Filter.Expr == nil || p.Sinks.Webhook.Endpoints[0].Filter.Expr == nil {
		t.Fatal("filters not compiled")
	}
	bad := strings.NewReplacer("Kind.KIND_TEST", "event.kindd", "Segment.SEGMENT_DETRACTOR", `"detractor"`).Replace(ok)
	_, err = ParsePipeline([]byte(bad), lookupFrom(map[string]string{"WH": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
	for _, want := range []string{"sinks.warehouse.filter", "undefined field 'kindd'", "sinks.webhook.endpoints[0] (alerts): filter", "no matching overload"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestTheComposePipelineFileLoads(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "compose", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePipeline(b, nil); err != nil {
		t.Fatalf("deploy/compose/pipeline.yaml: %v", err)
	}
}
