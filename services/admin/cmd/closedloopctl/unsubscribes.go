package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

func (c *cli) unsubscribesCmd() *cobra.Command {
	var email, destination, result string
	var since time.Duration
	var limit int
	cmd := &cobra.Command{
		Use:   "unsubscribes",
		Short: "Recent unsubscribes and their propagation to each CRM: who, where, when received and applied, how long it took",
		Long: `Recent unsubscribes and their propagation to each CRM destination, newest first:
who opted out, which CRM, when closedloop received it, when the CRM applied it,
how long that took, and the result (applied, already_opted_out, unknown_contact,
failed). Pending ones are counted by closedloop_unsubscribe_pending and alerted
on (UnsubscribeNotApplied) once past the destination's unsubscribe_deadline.`,
		Args: exactly(0, "no arguments (filter with --email, --destination, --result)"),
		RunE: func(_ *cobra.Command, _ []string) error {
			req := &adminv1.ListUnsubscribesRequest{Email: email, Destination: destination, Limit: int32(limit)}
			if result != "" {
				v, ok := sinkv1.PropagationResult_value["PROPAGATION_RESULT_"+strings.ToUpper(result)]
				if !ok || v == 0 {
					return fmt.Errorf("--result %q: one of applied, already_opted_out, unknown_contact, failed", result)
				}
				req.Result = sinkv1.PropagationResult(v)
			}
			if since > 0 {
				req.Since = timestamppb.New(time.Now().Add(-since))
			}
			res, err := call(c, adminv1.AdminServiceClient.ListUnsubscribes, req)
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "EMAIL\tDESTINATION\tRESULT\tRECEIVED\tAPPLIED\tTOOK\tSOURCE\tDETAIL")
				for _, p := range res.Propagations {
					took := p.AppliedAt.AsTime().Sub(p.ReceivedAt.AsTime()).Round(time.Millisecond)
					fmt.Fprintf(w, "%s\t%s (%s)\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Email, p.Destination, p.Kind,
						strings.ToLower(strings.TrimPrefix(p.Result.String(), "PROPAGATION_RESULT_")),
						p.ReceivedAt.AsTime().Local().Format(time.DateTime), p.AppliedAt.AsTime().Local().Format(time.DateTime),
						took, p.Source, cut(p.Detail, 60))
				}
				if len(res.Propagations) == 0 {
					fmt.Fprintln(w, "(none recorded)")
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&email, "email", "", "only this email")
	f.StringVar(&destination, "destination", "", "only this CRM destination (its name in the pipeline file)")
	f.StringVar(&result, "result", "", "only this result: applied, already_opted_out, unknown_contact, failed")
	f.DurationVar(&since, "since", 0, "only those applied within this long (e.g. 24h)")
	f.IntVar(&limit, "limit", 50, "most rows (at most 1000)")
	return cmd
}

func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
