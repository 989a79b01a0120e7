package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func (c *cli) testEventCmd() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "test-event <source>",
		Short: "A signed test webhook through the real ingress: when it reached each stage and sink",
		Long: `test-event signs a test webhook the way the source's provider does, posts it to the ingress
and follows it through every stage to every sink (flagged as a test: sinks may skip it).
It exits 0 only when every stage and sink was reached within --wait.`,
		Args:              exactly(1, "a source name (closedloopctl sources lists them)"),
		ValidArgsFunction: c.completeSource,
		RunE: func(_ *cobra.Command, args []string) error {
			if wait <= 0 {
				return usagef("--wait must be positive")
			}
			api, err := c.api()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(wait + 10*time.Second)
			defer cancel()
			res, err := api.SendTestEvent(ctx, &adminv1.SendTestEventRequest{Source: args[0], TimeoutSeconds: int32(wait.Seconds())})
			if err != nil {
				return err
			}
			if !res.Complete {
				c.code = exitFailed
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "test event %s (flagged test)\n\n", res.EventId)
				fmt.Fprintln(w, "STAGE\tREACHED\tAFTER\tDETAIL")
				for _, st := range res.Stages {
					after := "-"
					if st.Reached {
						after = (time.Duration(st.AfterMs) * time.Millisecond).String()
					}
					fmt.Fprintf(w, "%s\t%v\t%s\t%s\n", st.Stage, st.Reached, after, st.Detail)
				}
			})
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for every stage and sink")
	return cmd
}
