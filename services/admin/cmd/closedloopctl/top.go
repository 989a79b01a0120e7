package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// Freshness above which a stage is shown as late (the SLO of the alert
// rules: 99 % of events at every destination within 60 s).
const lateAfter = 60 * time.Second

func (c *cli) topCmd() *cobra.Command {
	var interval time.Duration
	var iterations int
	var plain bool
	cmd := &cobra.Command{
		Use:   "top",
		Short: "A live view of the pipeline: webhooks/s, each stage's rate, lag and freshness, dead letters, breakers",
		Long: `top asks the admin for the pipeline's status every --interval and shows, refreshed in place:
webhooks per second by source (accepted, refused, failed), each stage's records per second,
lag and freshness (how old the latest event was when the stage finished it) with a sparkline
of the last minutes, the dead letters waiting, each destination's breaker and pauses, and the
problems. Unhealthy rows are red, warnings yellow. q (or Ctrl-C) quits.

When stdout is not a terminal (a pipe, a log file, --plain) it prints one plain block per
refresh instead, with no escape codes; --iterations stops after that many refreshes.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 100*time.Millisecond {
				return usagef("--interval %s: at least 100ms", interval)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			t := &top{c: c, interval: interval, iterations: iterations}
			if c.terminal && !plain {
				return t.runScreen(ctx, os.Stdin, c.out)
			}
			return t.runPlain(ctx, c.out)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&interval, "interval", time.Second, "time between refreshes")
	f.IntVar(&iterations, "iterations", 0, "stop after this many refreshes (0: until q or Ctrl-C)")
	f.BoolVar(&plain, "plain", false, "plain periodic output even on a terminal")
	return cmd
}

// top keeps the last minutes of status answers and draws them.
type top struct {
	c          *cli
	interval   time.Duration
	iterations int
	hist       []topSample
	lastErr    error
}

type topSample struct {
	at time.Time
	st *adminv1.GetPipelineStatusResponse
}

// keep is how much history the sparklines show.
const keep = 5 * time.Minute

func (t *top) poll(ctx context.Context) {
	api, err := t.c.api()
	if err == nil {
		cctx, cancel := t.c.ctx(min(t.c.timeout, 10*time.Second))
		defer cancel()
		if ctx.Err() != nil {
			return
		}
		var st *adminv1.GetPipelineStatusResponse
		st, err = api.GetPipelineStatus(cctx, &adminv1.GetPipelineStatusRequest{})
		if err == nil {
			now := time.Now()
			t.hist = append(t.hist, topSample{at: now, st: st})
			for len(t.hist) > 2 && now.Sub(t.hist[0].at) > keep {
				t.hist = t.hist[1:]
			}
		}
	}
	t.lastErr = err
}

// every polls and draws every interval until ctx ends or the iterations
// are done.
func (t *top) every(ctx context.Context, draw func()) error {
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for n := 1; ; n++ {
		t.poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		draw()
		if t.iterations > 0 && n >= t.iterations {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// runPlain prints a block per refresh.
func (t *top) runPlain(ctx context.Context, out io.Writer) error {
	return t.every(ctx, func() {
		for _, l := range t.frame(0) {
			fmt.Fprintln(out, l.text)
		}
		fmt.Fprintln(out)
	})
}

// runScreen draws on the terminal's alternate screen until q, Ctrl-C or
// the context ends, and restores the terminal.
func (t *top) runScreen(ctx context.Context, in *os.File, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if term.IsTerminal(int(in.Fd())) {
		old, err := term.MakeRaw(int(in.Fd()))
		if err == nil {
			defer func() { _ = term.Restore(int(in.Fd()), old) }()
		}
		go func() {
			buf := make([]byte, 16)
			for {
				n, err := in.Read(buf)
				if err != nil {
					return
				}
				for _, b := range buf[:n] {
					if b == 'q' || b == 'Q' || b == 3 /* Ctrl-C in raw mode */ || b == 4 /* Ctrl-D */ {
						cancel()
						return
					}
				}
			}
		}()
	}
	fmt.Fprint(out, "\x1b[?1049h\x1b[?25l") // alternate screen, hide the cursor
	defer fmt.Fprint(out, "\x1b[?25h\x1b[?1049l")
	return t.every(ctx, func() {
		width := 0
		if f, ok := out.(*os.File); ok {
			width, _, _ = term.GetSize(int(f.Fd()))
		}
		var b strings.Builder
		b.WriteString("\x1b[H\x1b[2J")
		for _, l := range t.frame(width) {
			switch l.level {
			case levelBad:
				b.WriteString("\x1b[1;31m" + l.text + "\x1b[0m")
			case levelWarn:
				b.WriteString("\x1b[33m" + l.text + "\x1b[0m")
			case levelTitle:
				b.WriteString("\x1b[1m" + l.text + "\x1b[0m")
			default:
				b.WriteString(l.text)
			}
			b.WriteString("\r\n")
		}
		fmt.Fprint(out, b.String())
	})
}

type level int

const (
	levelOK level = iota
	levelTitle
	levelWarn
	levelBad
)

type line struct {
	text  string
	level level
}

// frame renders the latest answer and the history as lines (clipped to
// width when it is known).
func (t *top) frame(width int) []line {
	var out []line
	add := func(lv level, format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		if width > 0 && len([]rune(s)) > width {
			s = string([]rune(s)[:width])
		}
		out = append(out, line{s, lv})
	}
	now := time.Now().UTC().Format("15:04:05")
	if len(t.hist) == 0 {
		add(levelTitle, "closedloop top — %s — %s", t.c.addr, now)
		if t.lastErr != nil {
			add(levelBad, "admin: %s", t.c.describe(t.lastErr))
		} else {
			add(levelOK, "waiting for the first answer…")
		}
		return out
	}
	cur := t.hist[len(t.hist)-1].st
	state, lv := "healthy", levelTitle
	if !cur.Healthy {
		state, lv = "UNHEALTHY", levelBad
	}
	add(lv, "closedloop top — %s — %s — %s — every %s, q quits", t.c.addr, now, state, t.interval)
	if t.lastErr != nil {
		add(levelBad, "admin: %s (showing the last answer)", t.c.describe(t.lastErr))
	}
	add(levelOK, "")

	// Webhooks per source.
	add(levelTitle, "%-22s %10s %10s %10s  %-*s", "SOURCE", "WEBHOOKS/s", "REFUSED/s", "FAILED/s", sparkWidth, "WEBHOOKS/s, LAST "+t.span())
	if len(cur.Sources) == 0 {
		add(levelOK, "%-22s", "(no webhooks since the ingress started)")
	}
	for _, s := range cur.Sources {
		name := s.Source
		if name == "" {
			name = "(unknown source)"
		}
		acc := t.sourceRates(s.Source, func(v *adminv1.SourceTraffic) int64 { return v.Accepted })
		rej := last(t.sourceRates(s.Source, func(v *adminv1.SourceTraffic) int64 { return v.Rejected }))
		fail := last(t.sourceRates(s.Source, func(v *adminv1.SourceTraffic) int64 { return v.Failed }))
		lvl := levelOK
		switch {
		case fail > 0:
			lvl = levelBad
		case rej > 0:
			lvl = levelWarn
		}
		add(lvl, "%-22s %10s %10s %10s  %s", clip(name, 22), rateStr(last(acc)), rateStr(rej), rateStr(fail), spark(acc))
	}
	add(levelOK, "")

	// Stages.
	add(levelTitle, "%-26s %9s %-*s %9s %-*s %8s %-*s %5s  %s", "STAGE", "RATE/s", sparkWidth, "", "LAG", sparkWidth, "", "FRESH", sparkWidth, "", "DLQ", "STATE")
	for _, s := range cur.Stages {
		name := s.Name
		rate := t.series(func(st *adminv1.GetPipelineStatusResponse) (float64, bool) {
			if v := stageOf(st, name); v != nil {
				return float64(v.Processed), true
			}
			return 0, false
		}, true)
		lag := t.series(func(st *adminv1.GetPipelineStatusResponse) (float64, bool) {
			if v := stageOf(st, name); v != nil {
				return float64(v.Lag), true
			}
			return 0, false
		}, false)
		fresh := t.series(func(st *adminv1.GetPipelineStatusResponse) (float64, bool) {
			if v := stageOf(st, name); v != nil && v.FreshnessAt != nil {
				return v.FreshnessSeconds, true
			}
			return 0, false
		}, false)
		freshStr := "-"
		if s.FreshnessAt != nil {
			freshStr = seconds(s.FreshnessSeconds)
		}
		var states []string
		lvl := levelOK
		for _, d := range s.Destinations {
			b := short(d.Breaker, "BREAKER_STATE_")
			switch {
			case d.Breaker == adminv1.BreakerState_BREAKER_STATE_UNSPECIFIED && !d.Paused:
				continue
			case d.Breaker == adminv1.BreakerState_BREAKER_STATE_UNSPECIFIED:
				b = "paused"
			case d.Paused:
				b = "paused"
			}
			if d.Breaker == adminv1.BreakerState_BREAKER_STATE_OPEN || d.Breaker == adminv1.BreakerState_BREAKER_STATE_HALF_OPEN || d.Disabled {
				lvl = levelBad
			} else if d.Paused && lvl < levelWarn {
				lvl = levelWarn
			}
			if b != "closed" || d.Paused {
				states = append(states, d.Name+":"+b)
			}
		}
		if len(s.Unreachable) > 0 {
			lvl = levelBad
			states = append(states, fmt.Sprintf("%d instance(s) down", len(s.Unreachable)))
		}
		if s.FreshnessAt != nil && s.FreshnessSeconds > lateAfter.Seconds() && lvl < levelBad {
			lvl = levelWarn
		}
		if s.DlqDepth > 0 && lvl < levelWarn {
			lvl = levelWarn
		}
		if len(states) == 0 {
			states = []string{"ok"}
		}
		add(lvl, "%-26s %9s %s %9d %s %8s %s %5d  %s", clip(name, 26), rateStr(last(rate)), spark(rate), s.Lag, spark(lag), freshStr, spark(fresh), s.DlqDepth, strings.Join(states, " "))
	}
	if len(cur.Reconciliation) > 0 {
		add(levelOK, "")
		for _, r := range cur.Reconciliation {
			lvl := levelOK
			if r.Found_24H > 0 {
				lvl = levelWarn
			}
			if r.LastError != "" {
				lvl = levelBad
			}
			add(lvl, "reconciliation %s: %d of %d events in the last 24h arrived only through it; last run %s%s", r.Source, r.Found_24H, r.Checked_24H,
				ago(r.LastRunAt), map[bool]string{true: ": " + clip(r.LastError, 60), false: ""}[r.LastError != ""])
		}
	}
	if len(cur.Problems) > 0 {
		add(levelOK, "")
		add(levelTitle, "PROBLEMS")
		for _, p := range cur.Problems {
			add(levelBad, "  %s", p)
		}
	}
	if lc := cur.LoopClosure; lc != nil && lc.Detractors > 0 {
		add(levelOK, "")
		add(levelOK, "loop closure, last 24h: %d detractors, %.0f%% with a ticket, %.0f%% solved", lc.Detractors,
			100*float64(lc.Ticketed)/float64(lc.Detractors), 100*float64(lc.Solved)/float64(lc.Detractors))
	}
	return out
}

// span is the history the sparklines cover, rounded.
func (t *top) span() string {
	d := t.interval
	if len(t.hist) >= 2 {
		d = max(d, t.hist[len(t.hist)-1].at.Sub(t.hist[0].at))
	}
	if d >= 10*time.Second {
		d = d.Round(time.Second)
	}
	return d.String()
}

// series returns one point per answer in the history: the value, or, with
// perSecond, its rate since the answer before (a counter that went down —
// an instance restarted — counts from zero).
func (t *top) series(get func(*adminv1.GetPipelineStatusResponse) (float64, bool), perSecond bool) []float64 {
	var out []float64
	for i, s := range t.hist {
		v, ok := get(s.st)
		if !ok {
			if !perSecond || i > 0 {
				out = append(out, 0)
			}
			continue
		}
		if !perSecond {
			out = append(out, v)
			continue
		}
		if i == 0 {
			continue
		}
		prev, ok := get(t.hist[i-1].st)
		dt := s.at.Sub(t.hist[i-1].at).Seconds()
		switch {
		case !ok || dt <= 0:
			out = append(out, 0)
		case v < prev:
			out = append(out, v/dt)
		default:
			out = append(out, (v-prev)/dt)
		}
	}
	return out
}

// sourceRates is the per-second series of one counter of a source.
func (t *top) sourceRates(source string, counter func(*adminv1.SourceTraffic) int64) []float64 {
	return t.series(func(st *adminv1.GetPipelineStatusResponse) (float64, bool) {
		if v := sourceOf(st, source); v != nil {
			return float64(counter(v)), true
		}
		return 0, false
	}, true)
}

func sourceOf(st *adminv1.GetPipelineStatusResponse, name string) *adminv1.SourceTraffic {
	for _, s := range st.Sources {
		if s.Source == name {
			return s
		}
	}
	return nil
}

func stageOf(st *adminv1.GetPipelineStatusResponse, name string) *adminv1.StageStatus {
	for _, s := range st.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func last(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return xs[len(xs)-1]
}

func rateStr(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func seconds(s float64) string {
	switch {
	case s < 1:
		return fmt.Sprintf("%.0fms", s*1000)
	case s < 120:
		return fmt.Sprintf("%.1fs", s)
	default:
		return (time.Duration(s) * time.Second).Round(time.Second).String()
	}
}

const sparkWidth = 16

var bars = []rune("▁▂▃▄▅▆▇█")

// spark draws xs in sparkWidth characters: each the mean of an equal share
// of the points (the newest on the right), scaled from 0 to the maximum.
func spark(xs []float64) string {
	if len(xs) == 0 {
		return strings.Repeat(" ", sparkWidth)
	}
	per := max(1, (len(xs)+sparkWidth-1)/sparkWidth)
	var cols []float64
	for end := len(xs); end > 0 && len(cols) < sparkWidth; end -= per {
		start := max(0, end-per)
		sum := 0.0
		for _, v := range xs[start:end] {
			sum += v
		}
		cols = append(cols, sum/float64(end-start))
	}
	top := 0.0
	for _, v := range cols {
		top = max(top, v)
	}
	var b strings.Builder
	b.WriteString(strings.Repeat(" ", sparkWidth-len(cols)))
	for i := len(cols) - 1; i >= 0; i-- {
		idx := 0
		if top > 0 {
			idx = int(math.Round(cols[i] / top * float64(len(bars)-1)))
		}
		b.WriteRune(bars[idx])
	}
	return b.String()
}
