package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func (c *cli) replayCmd() *cobra.Command {
	return group("replay", "Replay a time range of the raw or normalized topic; list, watch and cancel jobs",
		c.replayStartCmd("raw"), c.replayStartCmd("normalized"), c.replayLsCmd(), c.replayWatchCmd(), c.replayCancelCmd())
}

func (c *cli) replayStartCmd(from string) *cobra.Command {
	var since, until, source, sinkName, filter string
	var dry, detach bool
	var rate float64
	cmd := &cobra.Command{
		Use: from + " --since <when>",
		Short: map[string]string{
			"raw":        "A time range of the raw topic back through the normalizer (after a mapping fix)",
			"normalized": "A time range of normalized events into one sink (--sink), optionally filtered",
		}[from],
		Example: map[string]string{
			"raw":        "  closedloopctl replay raw --since 2h --source delighted-prod --dry-run",
			"normalized": "  closedloopctl replay normalized --sink sink-warehouse --since 2026-11-20T00:00:00Z --filter 'event.score <= 6'",
		}[from],
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if since == "" {
				return usagef("replay %s needs --since", from)
			}
			req := &adminv1.StartReplayRequest{From: adminv1.ReplayFrom_REPLAY_FROM_RAW, Sink: sinkName, Source: source, Filter: filter,
				DryRun: dry, RatePerSecond: rate}
			if from == "normalized" {
				req.From = adminv1.ReplayFrom_REPLAY_FROM_NORMALIZED
			}
			for _, t := range []struct {
				flag, v string
				dst     **timestamppb.Timestamp
			}{{"since", since, &req.Since}, {"until", until, &req.Until}} {
				if t.v == "" {
					continue
				}
				ts, err := parseWhen(t.flag, t.v)
				if err != nil {
					return err
				}
				*t.dst = ts
			}
			res, err := call(c, adminv1.AdminServiceClient.StartReplay, req)
			if err != nil {
				return err
			}
			if detach {
				return c.emit(res, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "replay job %s started (replay id %s): closedloopctl replay watch %s\n", res.Job.Id, res.Job.ReplayId, res.Job.Id)
				})
			}
			if !c.structured() {
				fmt.Fprintf(c.out, "replay job %s started (replay id %s)\n", res.Job.Id, res.Job.ReplayId)
			}
			return c.watch(res.Job.Id)
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "start of the range: a duration back (2h) or a time (RFC 3339); required")
	f.StringVar(&until, "until", "", "end of the range (default now)")
	f.StringVar(&source, "source", "", "only this source")
	if from == "normalized" {
		f.StringVar(&sinkName, "sink", "", "the sink to replay into (required)")
		f.StringVar(&filter, "filter", "", "a CEL expression over event")
	}
	f.BoolVar(&dry, "dry-run", false, "count what would be replayed; produce nothing and record no job")
	f.Float64Var(&rate, "rate", 500, "records per second at most")
	f.BoolVar(&detach, "detach", false, "start the job and return (follow it with replay watch)")
	return cmd
}

func (c *cli) replayLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "Replay jobs, newest first",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			res, err := call(c, adminv1.AdminServiceClient.ListReplays, &adminv1.ListReplaysRequest{})
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "JOB\tFROM\tSTATE\tSTARTED\tBY\tPRODUCED\tMATCHED\tSCANNED\tTOTAL")
				for _, j := range res.Jobs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", j.Id, short(j.Request.GetFrom(), "REPLAY_FROM_"), short(j.State, "REPLAY_STATE_"),
						ago(j.StartedAt), j.StartedBy, j.Produced, j.Matched, j.Scanned, j.Total)
				}
			})
		},
	}
}

func (c *cli) replayWatchCmd() *cobra.Command { return watchCmd("replay", c.watch) }

// watchCmd is the "watch <job>" command of a kind of job (replay,
// backfill).
func watchCmd(kind string, watch func(id string) error) *cobra.Command {
	return &cobra.Command{
		Use:   "watch <job>",
		Short: "Follow a job's progress until it ends (exit 0 only if it completed)",
		Args:  exactly(1, "a job id ("+kind+" ls)"),
		RunE:  func(_ *cobra.Command, args []string) error { return watch(args[0]) },
	}
}

func (c *cli) replayCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel <job>",
		Short: "Stop a running job (what it produced stays produced)",
		Args:  exactly(1, "a job id (replay ls)"),
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := call(c, adminv1.AdminServiceClient.CancelReplay, &adminv1.CancelReplayRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "job %s: %s after %d of %d records produced\n", res.Job.Id, short(res.Job.State, "REPLAY_STATE_"), res.Job.Produced, res.Job.Matched)
			})
		},
	}
}

// watch follows a replay job until it ends (see follow).
func (c *cli) watch(id string) error {
	api, err := c.api()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx(0)
	defer cancel()
	stream, err := api.WatchReplay(ctx, &adminv1.WatchReplayRequest{Id: id})
	if err != nil {
		return err
	}
	last, err := follow(c, func() (*adminv1.ReplayJob, error) {
		msg, err := stream.Recv()
		return msg.GetJob(), err
	}, func(j *adminv1.ReplayJob) string { return bar(j.Scanned, j.Total, 30) + " " + progressText(j) }, progressText)
	if err != nil {
		return err
	}
	if last == nil {
		return fmt.Errorf("no progress from job %s", id)
	}
	return c.finishJob(last, last.State == adminv1.ReplayState_REPLAY_STATE_DONE, progressText(last), last.Id, short(last.State, "REPLAY_STATE_"), last.Error)
}

// follow reads a job's progress reports until the stream ends: a progress
// line redrawn in place on a terminal, a line every 5 seconds into a pipe
// or a log, nothing with -o json|yaml. It returns the last report.
func follow[T any](c *cli, recv func() (T, error), line, text func(T) string) (T, error) {
	var last T
	var lastLine time.Time
	for {
		job, err := recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return last, err
		}
		last = job
		switch {
		case c.structured():
		case c.terminal:
			fmt.Fprintf(c.out, "\r%s\x1b[K", line(last))
		case time.Since(lastLine) >= 5*time.Second:
			lastLine = time.Now()
			fmt.Fprintln(c.out, text(last))
		}
	}
	if c.terminal && !c.structured() {
		fmt.Fprintln(c.out)
	}
	return last, nil
}

// finishJob prints a followed job's end (or emits it with -o json|yaml)
// and sets exit code 1 unless it completed.
func (c *cli) finishJob(job proto.Message, completed bool, text, id, state, errText string) error {
	if !completed {
		c.code = exitFailed
	}
	return c.emit(job, func(w *tabwriter.Writer) {
		if !c.terminal { // on a terminal the progress line already says it
			fmt.Fprintln(w, text)
		}
		fmt.Fprintf(w, "job %s %s", id, state)
		if errText != "" {
			fmt.Fprintf(w, ": %s", errText)
		}
		fmt.Fprintln(w)
	})
}

func progressText(j *adminv1.ReplayJob) string {
	if j.Request.GetDryRun() {
		return fmt.Sprintf("%d/%d scanned, %d would be replayed", j.Scanned, j.Total, j.Matched)
	}
	return fmt.Sprintf("%d/%d scanned, %d matched, %d produced", j.Scanned, j.Total, j.Matched, j.Produced)
}

func bar(done, total int64, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat("=", width) + "]"
	}
	n := int(int64(width) * min(done, total) / total)
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
}
