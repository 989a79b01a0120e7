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

	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
)

// costLimit bounds the work of one evaluation (CEL cost units: roughly one
// per field access or comparison; a list comprehension costs per element).
const costLimit = 100_000

var env = func() *cel.Env {
	e, err := cel.NewEnv(
		cel.Types(&feedbackv1.FeedbackEvent{}),
		cel.Container("closedloop.feedback.v1"),
		cel.Variable("event", cel.ObjectType("closedloop.feedback.v1.FeedbackEvent")),
		// score.value is a double: `event.score.value <= 6` must not need "6.0".
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		panic(fmt.Sprintf("expr: CEL environment: %v", err))
	}
	return e
}()

// Bool is a compiled boolean expression over an event.
type Bool struct {
	src  string
	prog cel.Program
}

// CompileBool compiles src, which must be a boolean CEL expression over
// `event`. The error says where and what is wrong.
func CompileBool(src string) (*Bool, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%s", strings.TrimSpace(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return nil, fmt.Errorf("the expression gives %s, not a bool (true: the event matches)", ast.OutputType())
	}
	prog, err := env.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
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
