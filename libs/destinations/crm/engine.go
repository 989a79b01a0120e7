package crm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/destinations/helpdesk"
	"github.com/closedloop/closedloop/libs/expr"
	"github.com/closedloop/closedloop/libs/sink"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// ErrUnknownContact is what Writer.Update returns for an update whose
// contact the CRM does not have (a CRM that does not upsert): the event is
// done, counted as unknown_contact.
var ErrUnknownContact = errors.New("the CRM has no contact with this email")

// NotApplied marks a retryable Update error that certainly changed nothing
// at the CRM (a rate limit's refusal, a failed lookup before any write):
// the contact need not be held for Engine.Settle.
func NotApplied(err error) error { return &notApplied{err} }

type notApplied struct{ error }

func (e *notApplied) Unwrap() error { return e.error }

// DefaultWhen selects the events a CRM destination takes: responses and
// unsubscribes with an email (not ticket follow-ups, not test events).
const DefaultWhen = `event.respondent.email != "" && event.kind != Kind.KIND_FOLLOW_UP && !event.test`

// TaskConfig is the `tasks:` section of a CRM account: a task (or note)
// on the contact for the responses its rule selects.
type TaskConfig struct {
	// Create is what to add: "task" (default), "note" (HubSpot), or "none".
	Create string `yaml:"create"`
	// When selects the responses (default: detractors).
	When string `yaml:"when"`
	// Priorities map responses to urgent, high, normal or low (default:
	// the priority lane urgent, the rest high).
	Priorities []helpdesk.PriorityRule `yaml:"priorities"`
	// Subject and Body are Go templates over the ticket data of
	// docs/destinations.md.
	Subject string `yaml:"subject"`
	Body    string `yaml:"body"`
}

// Compile returns the task rules (nil when Create is "none"); creates are
// the values Create may have besides "none".
func (t TaskConfig) Compile(creates ...string) (*helpdesk.Rules, string, error) {
	create := t.Create
	if create == "" {
		create = "task"
	}
	if create == "none" {
		return nil, create, nil
	}
	ok := false
	for _, c := range creates {
		ok = ok || c == create
	}
	if !ok {
		return nil, "", fmt.Errorf("tasks.create %q: one of %v or none", create, creates)
	}
	r, err := helpdesk.CompileRules(t.When, t.Priorities, t.Subject, t.Body, helpdesk.DefaultSubject, helpdesk.DefaultBody)
	if err != nil {
		return nil, "", fmt.Errorf("tasks: %w", err)
	}
	return r, create, nil
}

// Base is what every CRM account of the pipeline file has (inlined in
// each kind's Account).
type Base struct {
	// Name identifies the destination (status, pause, dead letters, its
	// consumer group): lower-case letters, digits and '-'.
	Name string `yaml:"name"`
	// When is a CEL expression over `event` selecting the events this
	// destination takes (default DefaultWhen).
	When string `yaml:"when"`
	// Tasks: a task (or note) for the responses its rule selects.
	Tasks TaskConfig `yaml:"tasks"`
	// UnsubscribeDeadline: an unsubscribe not applied after it is overdue
	// (closedloop.unsubscribe.overdue, alert ClosedloopUnsubscribeNotApplied).
	// Default 5m.
	UnsubscribeDeadline config.Duration `yaml:"unsubscribe_deadline"`
	// Timeout of one request (default 10s).
	Timeout config.Duration `yaml:"timeout"`
}

// AccountName implements helpdesk.Account.
func (b Base) AccountName() string { return b.Name }

// Engine delivers a CRM destination's batches through its Writer.
type Engine struct {
	Kind, Name string
	Writer     Writer
	Guard      *Guard
	Recorder   *Recorder
	Flag       *sink.DisabledFlag
	// Tasks, when set, selects the written responses that get a task.
	Tasks *helpdesk.Rules
	// When is the destination's filter (for Rule).
	When *expr.Bool
	// Settle holds a contact after a write whose outcome is unknown (the
	// request timeout: how long a request may linger at the CRM).
	Settle time.Duration
}

// Rule is the destination's filter (helpdesk.Opened).
func (e *Engine) Rule() *expr.Bool { return e.When }

// Disabled implements sink.Disabler: the flag a refused credential sets.
func (e *Engine) Disabled() (string, bool) { return e.Flag.Disabled() }

// Enable implements sink.Enabler (closedloopctl resume).
func (e *Engine) Enable(ctx context.Context) error { return e.Flag.Enable(ctx) }

// CompileWhen compiles a CRM destination's `when` (default DefaultWhen).
func CompileWhen(when string) (*expr.Bool, error) {
	if when == "" {
		when = DefaultWhen
	}
	b, err := expr.CompileBool(when)
	if err != nil {
		return nil, fmt.Errorf("when: %w", err)
	}
	return b, nil
}

func (e *Engine) errorf(format string, a ...any) error {
	return fmt.Errorf(e.Kind+" "+e.Name+": "+format, a...)
}

// Deliver implements sink.Destination.
func (e *Engine) Deliver(ctx context.Context, events []*sink.Event) []error {
	errs := make([]error, len(events))
	if why, off := e.Flag.Disabled(); off {
		err := sink.Retryable(e.errorf("disabled: %s (replace the credential and restart, or closedloopctl resume)", why), 0)
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var outs []*OptOut
	var outIdx []int
	newest := map[string]int{}
	var order []string
	superseded := 0
	for i, ev := range events {
		f := ev.Feedback
		email := Email(f)
		if email == "" {
			errs[i] = sink.Permanent(e.errorf("event %s has no respondent email: a CRM contact is found by its email", f.EventId))
			continue
		}
		if f.Kind == feedbackv1.Kind_KIND_UNSUBSCRIBED {
			outs = append(outs, &OptOut{Event: ev, Email: email})
			outIdx = append(outIdx, i)
			continue
		}
		j, seen := newest[email]
		switch {
		case !seen:
			newest[email] = i
			order = append(order, email)
		case VersionOf(f).Newer(VersionOf(events[j].Feedback)):
			newest[email] = i
			superseded++
		default:
			superseded++
		}
	}
	countUpdates(ctx, e.Name, "superseded", superseded)
	e.update(ctx, events, order, newest, errs)
	e.optOut(ctx, events, outs, outIdx, errs)
	return sink.Errors(errs)
}

// update writes the newest event of each contact, if the contact holds
// nothing newer, and the tasks of those written.
func (e *Engine) update(ctx context.Context, events []*sink.Event, order []string, newest map[string]int, errs []error) {
	if len(order) == 0 {
		return
	}
	versions := make([]Version, len(order))
	for k, email := range order {
		versions[k] = VersionOf(events[newest[email]].Feedback)
	}
	claims, held, err := e.claim(ctx, order, versions)
	if err != nil {
		for _, email := range order {
			errs[newest[email]] = sink.Retryable(err, 0)
		}
		return
	}
	var ups []*Update
	var upHeld []*Held
	superseded := 0
	for k, email := range order {
		i := newest[email]
		switch claims[k] {
		case Busy:
			errs[i] = sink.Retryable(e.errorf("another writer holds contact %s", email), time.Second)
		case Superseded:
			superseded++
		case Write:
			ups = append(ups, &Update{Event: events[i], Email: email})
			upHeld = append(upHeld, held[k])
		}
	}
	countUpdates(ctx, e.Name, "superseded", superseded)
	if len(ups) == 0 {
		return
	}
	pos := make(map[*sink.Event]int, len(events)) // an event's index in the batch
	for i, ev := range events {
		pos[ev] = i
	}
	uerrs := e.Writer.Update(ctx, ups)
	failed, unsure := make([]bool, len(ups)), make([]bool, len(ups))
	var tasks []*Task
	written, unknown, rejected := 0, 0, 0
	for k, u := range ups {
		i := pos[u.Event]
		var err error
		if uerrs != nil {
			err = uerrs[k]
		}
		switch {
		case errors.Is(err, ErrUnknownContact):
			failed[k] = true
			unknown++
		case err != nil:
			errs[i] = err
			if class, _, _ := sink.Classify(err); class == sinkv1.ErrorClass_ERROR_CLASS_PERMANENT {
				failed[k] = true
				rejected++
			} else {
				var na *notApplied
				unsure[k] = !errors.As(err, &na) // it may still land: hold the contact
			}
		default:
			written++
			if t, err := e.task(u); err != nil {
				errs[i] = err
			} else if t != nil {
				tasks = append(tasks, t)
			}
		}
	}
	// A failed release is not the events' failure: the leases expire on
	// their own (Guard.Lease), and a refused write that keeps its version
	// only makes older events of that contact skip.
	_ = e.Guard.Release(ctx, upHeld, failed, unsure, e.Settle)
	countUpdates(ctx, e.Name, "written", written)
	countUpdates(ctx, e.Name, "unknown_contact", unknown)
	countUpdates(ctx, e.Name, "rejected", rejected)
	if len(tasks) == 0 {
		return
	}
	terrs := e.Writer.Task(ctx, tasks)
	for k, t := range tasks {
		if terrs != nil && terrs[k] != nil {
			errs[pos[t.Update.Event]] = terrs[k]
		}
	}
}

// BusyWait is how long a batch waits for contacts another writer holds
// before it is retried (a dead writer's session expires within
// Guard.SessionTTL, 5 s).
const BusyWait = 8 * time.Second

// claim claims the contacts, waiting up to BusyWait for those another
// writer holds.
func (e *Engine) claim(ctx context.Context, emails []string, versions []Version) ([]Claim, []*Held, error) {
	claims, held, err := e.Guard.ClaimAll(ctx, emails, versions)
	deadline := time.Now().Add(BusyWait)
	for err == nil && time.Now().Before(deadline) {
		var busy []int
		for k, c := range claims {
			if c == Busy {
				busy = append(busy, k)
			}
		}
		if len(busy) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return claims, held, nil
		case <-time.After(250 * time.Millisecond):
		}
		be, bv := make([]string, len(busy)), make([]Version, len(busy))
		for j, k := range busy {
			be[j], bv[j] = emails[k], versions[k]
		}
		var bc []Claim
		var bh []*Held
		if bc, bh, err = e.Guard.ClaimAll(ctx, be, bv); err != nil {
			break
		}
		for j, k := range busy {
			claims[k], held[k] = bc[j], bh[j]
		}
	}
	return claims, held, err
}

// task is the update's task, nil when the rule does not select it.
func (e *Engine) task(u *Update) (*Task, error) {
	if e.Tasks == nil {
		return nil, nil
	}
	f := u.Event.Feedback
	if ok, err := e.Tasks.When.Eval(f); err != nil || !ok {
		return nil, nil
	}
	data := helpdesk.TicketData(f)
	subject, err := helpdesk.Render(e.Tasks.Subject, data)
	if err != nil {
		return nil, err
	}
	body, err := helpdesk.Render(e.Tasks.Body, data)
	if err != nil {
		return nil, err
	}
	return &Task{Update: u, Subject: helpdesk.Cut(subject, 255), Body: helpdesk.Cut(body, 30000), Priority: e.Tasks.Priority(f),
		Key: helpdesk.ExternalID(f)}, nil
}

// optOut applies the unsubscribes and records each outcome.
func (e *Engine) optOut(ctx context.Context, events []*sink.Event, outs []*OptOut, idx []int, errs []error) {
	if len(outs) == 0 {
		return
	}
	if err := e.Recorder.Pending(ctx, outs); err != nil {
		for _, i := range idx {
			errs[i] = sink.Retryable(fmt.Errorf("marking the unsubscribe pending in Redis: %w", err), 0)
		}
		return
	}
	recorded, err := e.Recorder.Recorded(ctx, outs)
	if err != nil {
		for _, i := range idx {
			errs[i] = sink.Retryable(err, 0)
		}
		return
	}
	var todo []*OptOut
	var todoIdx []int
	for k, o := range outs {
		if recorded[k] {
			errs[idx[k]] = e.Recorder.Record(ctx, o, Outcome{}) // the outcome it had
			continue
		}
		todo = append(todo, o)
		todoIdx = append(todoIdx, idx[k])
	}
	if len(todo) == 0 {
		return
	}
	results, oerrs := e.Writer.OptOut(ctx, todo)
	for k, o := range todo {
		var err error
		if oerrs != nil {
			err = oerrs[k]
		}
		if err != nil {
			if class, _, _ := sink.Classify(err); class == sinkv1.ErrorClass_ERROR_CLASS_PERMANENT {
				if rerr := e.Recorder.Record(ctx, o, Outcome{Result: sinkv1.PropagationResult_PROPAGATION_RESULT_FAILED, Detail: err.Error()}); rerr != nil {
					err = rerr // recorded first, dead-lettered after
				}
			}
			errs[todoIdx[k]] = err
			continue
		}
		errs[todoIdx[k]] = e.Recorder.Record(ctx, o, results[k])
	}
}

// NewEngine is a CRM account's engine in the hosting service's env: its
// guard and recorder keys under the kind's prefix and the account's name,
// its disabled flag for the credential named by fingerprint.
func NewEngine(kind, name string, env sink.KindEnv, w Writer, deadline, settle time.Duration, fingerprint string) *Engine {
	p := env.RedisPrefix + name + ":"
	rec := &Recorder{RDB: env.Redis, Prefix: p + "unsub:", Records: env.Records, Topic: env.Topics.Unsubscribes(), Audit: env.Audit,
		Sink: env.Sink, Destination: name, Kind: kind, Deadline: deadline}
	// One hash tag for the guard's keys: its script reads the session of a
	// lease's holder, a key it cannot name in advance.
	return &Engine{Kind: kind, Name: name, Writer: w, Settle: settle, Guard: &Guard{RDB: env.Redis, Prefix: env.RedisPrefix + "{" + name + "}:contact:"}, Recorder: rec,
		Flag: &sink.DisabledFlag{RDB: env.Redis, Key: p + "disabled", Fingerprint: fingerprint}}
}

// Load reads the disabled flag and starts reporting the pending
// unsubscribes.
func (e *Engine) Load(ctx context.Context) error {
	if e.Recorder.Records == nil {
		return errors.New("no producer for the unsubscribe propagations (KindEnv.Records)")
	}
	Observe(e.Recorder)
	e.Guard.Run(context.WithoutCancel(ctx))
	return e.Flag.Load(ctx)
}
