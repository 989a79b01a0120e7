package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// backfillAPI is the BackfillService client on the admin connection.
func (c *cli) backfillAPI() (adminv1.BackfillServiceClient, error) {
	if _, err := c.api(); err != nil {
		return nil, err
	}
	return adminv1.NewBackfillServiceClient(c.conn), nil
}

// callBackfill is call for BackfillService.
func callBackfill[Req, Res any](c *cli, method func(adminv1.BackfillServiceClient, context.Context, Req, ...grpc.CallOption) (Res, error), req Req) (Res, error) {
	var zero Res
	api, err := c.backfillAPI()
	if err != nil {
		return zero, err
	}
	ctx, cancel := c.ctx(c.timeout)
	defer cancel()
	return method(api, ctx, req)
}

func (c *cli) backfillCmd() *cobra.Command {
	return group("backfill", "Pull a source's history from its provider's API (Delighted, Typeform); list, watch and cancel jobs",
		c.backfillStartCmd(), c.backfillLsCmd(), c.backfillWatchCmd(), c.backfillCancelCmd())
}

func (c *cli) backfillStartCmd() *cobra.Command {
	var since, until string
	var dry, detach bool
	var rate int32
	cmd := &cobra.Command{
		Use:   "start <source> --since <when>",
		Short: "Fetch a time range of a source's items from its API into the pipeline (what arrived by webhook adds nothing)",
		Long: `start lists the source's items created in the range through its provider's API (the source's
api block in the pipeline file) and puts each through the pipeline as the webhook it would have
been: the same normalizer and dedupe, so a response that already arrived adds nothing and a newer
version of it adds a version. With the normalizer's Redis configured, items the pipeline has seen
are not even produced. The job's cursor is kept on a control topic: it survives a restart of the
admin and resumes where it was. One job per source at a time. --dry-run counts what the range
holds and what is missing, and produces nothing.`,
		Example: "  closedloopctl backfill start delighted --since 2026-11-01T00:00:00Z --until 2026-11-08T00:00:00Z --dry-run\n" +
			"  closedloopctl backfill start typeform-nps --since 720h --rate 1",
		Args: exactly(1, "a source with an api block (sources ls)"),
		RunE: func(_ *cobra.Command, args []string) error {
			if since == "" {
				return usagef("backfill start needs --since")
			}
			req := &adminv1.StartBackfillRequest{Source: args[0], DryRun: dry, RatePerSecond: rate}
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
			res, err := callBackfill(c, adminv1.BackfillServiceClient.StartBackfill, req)
			if err != nil {
				return err
			}
			if detach {
				return c.emit(res, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "backfill job %s started: closedloopctl backfill watch %s\n", res.Job.Id, res.Job.Id)
				})
			}
			if !c.structured() {
				fmt.Fprintf(c.out, "backfill job %s started (%s, %s to %s, %d requests/s)\n", res.Job.Id, args[0],
					res.Job.Request.Since.AsTime().Format(time.RFC3339), res.Job.Request.Until.AsTime().Format(time.RFC3339), res.Job.Request.RatePerSecond)
			}
			return c.watchBackfill(res.Job.Id)
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "start of the range: a duration back (720h) or a time (RFC 3339); required")
	f.StringVar(&until, "until", "", "end of the range (default now)")
	f.BoolVar(&dry, "dry-run", false, "count what the range holds and what the pipeline has not seen; produce nothing")
	f.Int32Var(&rate, "rate", 0, "requests per second to the provider, at most the source's api.rate_per_second (0: that)")
	f.BoolVar(&detach, "detach", false, "start the job and return (follow it with backfill watch)")
	return cmd
}

func (c *cli) backfillLsCmd() *cobra.Command {
	var source string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "Backfill jobs and reconciliation runs, newest first",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			res, err := callBackfill(c, adminv1.BackfillServiceClient.ListBackfills, &adminv1.ListBackfillsRequest{Source: source})
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "JOB\tKIND\tSOURCE\tSTATE\tSTARTED\tBY\tFETCHED\tPRODUCED\tSEEN\tREQUESTS\tERROR")
				for _, j := range res.Jobs {
					kind := short(j.Kind, "BACKFILL_KIND_")
					if j.Request.GetDryRun() {
						kind += " (dry run)"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", j.Id, kind, j.Request.GetSource(), short(j.State, "BACKFILL_STATE_"),
						ago(j.StartedAt), j.StartedBy, j.Fetched, j.Produced, j.AlreadySeen, j.Requests, orDash(clip(j.Error, 60)))
				}
			})
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "only this source's jobs")
	return cmd
}

func (c *cli) backfillWatchCmd() *cobra.Command { return watchCmd("backfill", c.watchBackfill) }

func (c *cli) backfillCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel <job>",
		Short: "Stop a running job (what it produced stays produced)",
		Args:  exactly(1, "a job id (backfill ls)"),
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := callBackfill(c, adminv1.BackfillServiceClient.CancelBackfill, &adminv1.CancelBackfillRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "job %s: %s after %d items fetched, %d produced\n", res.Job.Id, short(res.Job.State, "BACKFILL_STATE_"), res.Job.Fetched, res.Job.Produced)
			})
		},
	}
}

// watchBackfill follows a job until it ends: a progress bar through the
// time range with the events and an ETA on a terminal, a line every 5
// seconds into a pipe or a log, nothing but the result with -o json|yaml.
func (c *cli) watchBackfill(id string) error {
	api, err := c.backfillAPI()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx(0)
	defer cancel()
	stream, err := api.WatchBackfill(ctx, &adminv1.WatchBackfillRequest{Id: id})
	if err != nil {
		return err
	}
	last, err := follow(c, func() (*adminv1.BackfillJob, error) {
		msg, err := stream.Recv()
		return msg.GetJob(), err
	}, func(j *adminv1.BackfillJob) string {
		done, total := backfillProgress(j)
		return bar(done, total, 30) + " " + backfillText(j)
	}, backfillText)
	if err != nil {
		return err
	}
	if last == nil {
		return fmt.Errorf("no progress from job %s", id)
	}
	return c.finishJob(last, last.State == adminv1.BackfillState_BACKFILL_STATE_DONE, backfillText(last), last.Id, short(last.State, "BACKFILL_STATE_"), last.Error)
}

// backfillProgress is how far through the range the job is, in seconds of
// it (the providers list by time, Delighted oldest first, Typeform newest
// first), for the bar.
func backfillProgress(j *adminv1.BackfillJob) (done, total int64) {
	since, until := j.Request.GetSince().AsTime(), j.Request.GetUntil().AsTime()
	total = max(1, int64(until.Sub(since).Seconds()))
	if j.State == adminv1.BackfillState_BACKFILL_STATE_DONE {
		return total, total
	}
	if j.Reached != nil {
		d := j.Reached.AsTime().Sub(since).Seconds()
		if j.Descending {
			d = until.Sub(j.Reached.AsTime()).Seconds()
		}
		done = int64(max(0, min(d, float64(total))))
	}
	return done, total
}

// backfillText is the job's counts, rate and ETA.
func backfillText(j *adminv1.BackfillJob) string {
	elapsed := time.Since(j.StartedAt.AsTime())
	if j.FinishedAt != nil {
		elapsed = j.FinishedAt.AsTime().Sub(j.StartedAt.AsTime())
	}
	perSec := float64(j.Fetched) / max(elapsed.Seconds(), 0.001)
	verb := "produced"
	if j.Request.GetDryRun() {
		verb = "missing"
	}
	s := fmt.Sprintf("%d fetched (%d pages, %d requests), %d %s, %d already received, %.0f/s", j.Fetched, j.Pages, j.Requests, j.Produced, verb, j.AlreadySeen, perSec)
	if done, total := backfillProgress(j); j.State == adminv1.BackfillState_BACKFILL_STATE_RUNNING && done > 0 && done < total {
		eta := time.Duration(float64(elapsed) * float64(total-done) / float64(done))
		s += ", ETA " + eta.Round(time.Second).String()
	}
	if j.State == adminv1.BackfillState_BACKFILL_STATE_RUNNING && j.Error != "" {
		s += " — " + clip(j.Error, 80)
	}
	return s
}
