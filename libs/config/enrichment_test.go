package config

import (
	"strings"
	"testing"
	"time"
)

const enrichmentYAML = `
enrichment:
  lookups:
    - name: account
      key: 'event.respondent.email.contains("@") ? event.respondent.email.split("@")[1] : ""'
      url: http://127.0.0.1:8090/v1/accounts/{key}
      secret_headers: {Authorization: "Bearer env:CRM_TOKEN"}
      fields: {tier: account.tier, arr: account.arr}
  rules:
    - name: escalate
      when: 'event.segment == Segment.SEGMENT_DETRACTOR && has(enrichment.tier) && enrichment.tier == "enterprise"'
      labels: [escalate]
      lane: priority
`

func TestEnrichmentLoadsWithDefaultsAndTheDefaultRuleFirst(t *testing.T) {
	p, err := ParsePipeline([]byte(enrichmentYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	l := p.Enrichment.Lookups[0]
	if l.KeyExpr == nil || l.Method != "GET" || l.Timeout.Duration != 2*time.Second || l.CacheTTL.Duration != time.Hour ||
		l.NegativeTTL.Duration != 5*time.Minute || l.RateLimit.PerSecond != 50 || l.Attempts != 3 || l.NotFoundStatus[0] != 404 {
		t.Fatalf("lookup defaults: %+v", l)
	}
	rules := p.Enrichment.RoutingRules()
	if len(rules) != 2 || rules[0].Name != "detractors" || rules[0].Lane != "priority" || rules[1].Expr == nil {
		t.Fatalf("rules: %+v", rules)
	}
	off, err := ParsePipeline([]byte(strings.Replace(enrichmentYAML, "enrichment:\n", "enrichment:\n  detractors_to_priority: false\n", 1)), nil)
	if err != nil || len(off.Enrichment.RoutingRules()) != 1 {
		t.Fatalf("default rule switched off: %v", err)
	}
}

func TestARuleThatDoesNotCompileIsReportedWithItsNameAndColumn(t *testing.T) {
	bad := strings.NewReplacer(`enrichment.tier == "enterprise"`, `enrichment.tier == "enterprise" && event.segmnt == 1`,
		"fields: {tier: account.tier, arr: account.arr}", "fields: {Tier: account.tier}",
		"Bearer env:CRM_TOKEN", "Bearer s3cr3t").Replace(enrichmentYAML)
	_, err := ParsePipeline([]byte(bad), nil)
	for _, want := range []string{"enrichment.rules[0] (escalate): when:", "undefined field 'segmnt'", "1:", "^",
		`field name "Tier"`, "secret_headers.Authorization"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "s3cr3t") {
		t.Error("the error repeats a literal secret")
	}
}
