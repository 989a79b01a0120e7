// Package expr compiles the CEL expressions of the pipeline file — sink
// filters and enricher rules — over a FeedbackEvent.
//
// An expression sees the event as `event`, a closedloop.feedback.v1.FeedbackEvent
// (field names as in the .proto), and the enums by their short names:
//
//	event.kind == Kind.KIND_RESPONSE_CREATED
//	has(event.score) && event.score.value <= 6
//	event.segment == Segment.SEGMENT_DETRACTOR && event.source == "delighted"
//	"vip" in event.tags || event.properties["person_properties.plan"] == "enterprise"
//	event.respondent.email.endsWith("@example.com")
//	event.respondent.email.split("@")[1]              (a string: a lookup's key)
//
// Routing rules also see `enrichment`, the fields the lookups returned by
// field name: `has(enrichment.tier) && enrichment.tier == "enterprise"`.
//
// Expressions are type-checked when compiled, so a misspelt field or a
// comparison of a number with a string is an error at start-up, not a
// surprise per event; evaluation has a cost limit so no expression can stall
// a partition.
package expr

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"

	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// costLimit bounds the work of one evaluation (CEL cost units: roughly one
// per field access or comparison; a list comprehension costs per element).
const costLimit = 100_000

// newEnv builds a CEL environment over `event` with the given extra
// variables.
func newEnv(extra ...cel.EnvOption) *cel.Env {
	opts := append([]cel.EnvOption{
		cel.Types(&feedbackv1.FeedbackEvent{}),
		cel.Container("closedloop.feedback.v1"),
		cel.Variable("event", cel.ObjectType("closedloop.feedback.v1.FeedbackEvent")),
		// score.value is a double: `event.score.value <= 6` must not need "6.0".
		cel.CrossTypeNumericComparisons(true),
		// split, lowerAscii, substring, ...: `event.respondent.email.split("@")[1]`.
		ext.Strings(),
	}, extra...)
	e, err := cel.NewEnv(opts...)
	if err != nil {
		panic(fmt.Sprintf("expr: CEL environment: %v", err))
	}
	return e
}

var (
	env = newEnv()
	// ruleEnv adds `enrichment`: the fields the lookups returned, by field
	// name (map(string, dyn)); `has(enrichment.tier)` tests for one.
	ruleEnv = newEnv(cel.Variable("enrichment", cel.MapType(cel.StringType, cel.DynType)))
)

func compile(e *cel.Env, src string, want *types.Type, what string) (cel.Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	ast, iss := e.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%s", strings.TrimSpace(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(want) {
		return nil, fmt.Errorf("the expression gives %s, not %s", ast.OutputType(), what)
	}
	return e.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
}

// Bool is a compiled boolean expression over an event.
type Bool struct {
	src  string
	prog cel.Program
}

// CompileBool compiles src, which must be a boolean CEL expression over
// `event`. The error says where and what is wrong.
func CompileBool(src string) (*Bool, error) {
	prog, err := compile(env, src, types.BoolType, "a bool (true: the event matches)")
	if err != nil {
		return nil, err
	}
	return &Bool{src: src, prog: prog}, nil
}

// String is the source of the expression.
func (b *Bool) String() string { return b.src }

// Eval evaluates the expression for ev. An error (a missing map key, the
// cost limit, a division by zero) is returned, never taken as false: the
// caller decides what an event that cannot be judged becomes.
func (b *Bool) Eval(ev *feedbackv1.FeedbackEvent) (bool, error) {
	out, _, err := b.prog.Eval(map[string]any{"event": ev})
	if err != nil {
		return false, fmt.Errorf("%q: %w", b.src, err)
	}
	v, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("%q gave %v, not a bool", b.src, out)
	}
	return v, nil
}

// Rule is a compiled boolean expression over an event and its enrichment.
type Rule struct {
	src  string
	prog cel.Program
}

// CompileRule compiles src, a boolean CEL expression over `event` and
// `enrichment` (map of lookup field name to value).
func CompileRule(src string) (*Rule, error) {
	prog, err := compile(ruleEnv, src, types.BoolType, "a bool (true: the rule applies)")
	if err != nil {
		return nil, err
	}
	return &Rule{src: src, prog: prog}, nil
}

// Eval evaluates the rule; enrichment holds Go values (string, float64,
// bool, nil, []any, map[string]any).
func (r *Rule) Eval(ev *feedbackv1.FeedbackEvent, enrichment map[string]any) (bool, error) {
	out, _, err := r.prog.Eval(map[string]any{"event": ev, "enrichment": enrichment})
	if err != nil {
		return false, err
	}
	v, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("gave %v, not a bool", out)
	}
	return v, nil
}

// String is a compiled string expression over an event (a lookup's key).
type String struct {
	src  string
	prog cel.Program
}

// CompileString compiles src, a CEL expression over `event` giving a string.
func CompileString(src string) (*String, error) {
	prog, err := compile(env, src, types.StringType, "a string")
	if err != nil {
		return nil, err
	}
	return &String{src: src, prog: prog}, nil
}

// Eval evaluates the expression for ev.
func (s *String) Eval(ev *feedbackv1.FeedbackEvent) (string, error) {
	out, _, err := s.prog.Eval(map[string]any{"event": ev})
	if err != nil {
		return "", err
	}
	v, ok := out.Value().(string)
	if !ok {
		return "", fmt.Errorf("gave %v, not a string", out)
	}
	return v, nil
}
