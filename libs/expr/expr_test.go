package expr

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

func detractor() *feedbackv1.FeedbackEvent {
	return &feedbackv1.FeedbackEvent{
		EventId: "e1", Source: "delighted", Kind: feedbackv1.Kind_KIND_RESPONSE_CREATED,
		Score:      &feedbackv1.Score{Value: 3, Min: 0, Max: 10},
		Segment:    feedbackv1.Segment_SEGMENT_DETRACTOR,
		Tags:       []string{"vip"},
		Respondent: &feedbackv1.Respondent{Email: "ann@example.com"},
		Properties: map[string]*structpb.Value{"person_properties.plan": structpb.NewStringValue("enterprise")},
	}
}

func TestExpressionsSeeTheEventWithItsEnumsByShortName(t *testing.T) {
	ev := detractor()
	for src, want := range map[string]bool{
		`event.kind == Kind.KIND_RESPONSE_CREATED`:                             true,
		`event.segment == Segment.SEGMENT_DETRACTOR && event.score.value <= 6`: true,
		`has(event.score) && event.score.value >= 9`:                           false,
		`"vip" in event.tags`:                                                  true,
		`event.properties["person_properties.plan"] == "enterprise"`:           true,
		`event.respondent.email.endsWith("@example.com")`:                      true,
		`event.test`:         false,
		`has(event.comment)`: false,
	} {
		b, err := CompileBool(src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		got, err := b.Eval(ev)
		if err != nil || got != want {
			t.Errorf("%s = %v, %v; want %v", src, got, err, want)
		}
	}
}

func TestMistakesAreFoundWhenCompiledWithAnActionableMessage(t *testing.T) {
	for src, want := range map[string]string{
		`event.scor.value < 6`:                  "undefined field 'scor'",
		`event.score.value < "6"`:               "no matching overload",
		`event.kind`:                            "not a bool",
		`event.segment == `:                     "Syntax error",
		`   `:                                   "empty expression",
		`Kind.KIND_NO_SUCH_THING == event.kind`: "undeclared reference",
	} {
		_, err := CompileBool(src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", src, err, want)
		}
	}
}

func TestAnEvaluationErrorIsAnErrorNotFalse(t *testing.T) {
	b, err := CompileBool(`event.properties["missing"] == "x"`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Eval(detractor()); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want the missing key named", err)
	}
}

func TestTheCostLimitStopsARunawayExpression(t *testing.T) {
	b, err := CompileBool(`[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a+b+c+d+e > 0)))))`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Eval(detractor()); err == nil || !strings.Contains(err.Error(), "cost") {
		t.Fatalf("err = %v, want the cost limit", err)
	}
}

func BenchmarkEvalDetractorRule(b *testing.B) {
	f, err := CompileBool(`event.segment == Segment.SEGMENT_DETRACTOR && event.source == "delighted" && has(event.score) && event.score.value <= 6`)
	if err != nil {
		b.Fatal(err)
	}
	ev := detractor()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := f.Eval(ev); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func TestRulesSeeTheEnrichmentByFieldName(t *testing.T) {
	r, err := CompileRule(`event.segment == Segment.SEGMENT_DETRACTOR && has(enrichment.tier) && enrichment.tier == "enterprise" && enrichment.arr > 100000`)
	if err != nil {
		t.Fatal(err)
	}
	ev := detractor()
	if ok, err := r.Eval(ev, map[string]any{"tier": "enterprise", "arr": 250000.0}); !ok || err != nil {
		t.Fatalf("enterprise detractor: %v %v", ok, err)
	}
	if ok, err := r.Eval(ev, map[string]any{}); ok || err != nil {
		t.Fatalf("not enriched: %v %v, want false without an error (has() guards it)", ok, err)
	}
	if _, err := CompileRule(`enrichment.tier`); err == nil || !strings.Contains(err.Error(), "not a bool") {
		t.Fatalf("a non-bool rule: %v", err)
	}
	if _, err := CompileBool(`has(enrichment.tier)`); err == nil || !strings.Contains(err.Error(), "undeclared reference to 'enrichment'") {
		t.Fatalf("a filter cannot see enrichment: %v", err)
	}
}

func TestAStringExpressionGivesALookupKey(t *testing.T) {
	s, err := CompileString(`event.respondent.email.contains("@") ? event.respondent.email.split("@")[1].lowerAscii() : ""`)
	if err != nil {
		t.Fatal(err)
	}
	ev := detractor()
	ev.Respondent.Email = "Ann@Example.COM"
	if got, err := s.Eval(ev); got != "example.com" || err != nil {
		t.Fatalf("key = %q, %v", got, err)
	}
	if _, err := CompileString(`event.score.value`); err == nil || !strings.Contains(err.Error(), "not a string") {
		t.Fatalf("a non-string key: %v", err)
	}
}
