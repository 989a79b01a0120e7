package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func (c *cli) pauseCmd(verb string) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use: verb + " <sink> [destination]",
		Short: map[string]string{
			"pause":  "Stop deliveries on every instance (Kafka keeps the backlog; normalizer and enricher pause too)",
			"resume": "Deliver again (also re-enables a destination that disabled itself)",
		}[verb],
		Example: map[string]string{
			"pause":  "  closedloopctl pause sink-webhook crm-bridge --reason \"CRM maintenance until 14:00\"",
			"resume": "  closedloopctl resume sink-webhook crm-bridge",
		}[verb],
		Args: between(1, 2, "a sink (or normalizer / enricher) and optionally one destination"),
		RunE: func(_ *cobra.Command, args []string) error {
			dest := ""
			if len(args) == 2 {
				dest = args[1]
			}
			if verb == "pause" && reason == "" {
				return usagef("pause needs --reason (on-call will want to know)")
			}
			// (A failed call carries no response: gRPC drops it.)
			var instances []*adminv1.InstanceDestinations
			var msg proto.Message
			if verb == "pause" {
				res, err := call(c, adminv1.AdminServiceClient.PauseSink, &adminv1.PauseSinkRequest{Sink: args[0], Destination: dest, Reason: reason})
				if err != nil {
					return err
				}
				instances, msg = res.Instances, res
			} else {
				res, err := call(c, adminv1.AdminServiceClient.ResumeSink, &adminv1.ResumeSinkRequest{Sink: args[0], Destination: dest})
				if err != nil {
					return err
				}
				instances, msg = res.Instances, res
			}
			return c.emit(msg, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "INSTANCE\tDESTINATION\tPAUSED\tBREAKER\tREASON / ERROR")
				for _, in := range instances {
					if in.Error != "" {
						fmt.Fprintf(w, "%s\t-\t?\t?\t%s\n", in.Address, in.Error)
					}
					for _, d := range in.Destinations {
						fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\n", in.Address, d.Name, d.Paused, short(d.Breaker, "BREAKER_STATE_"), d.PauseReason)
					}
				}
			})
		},
	}
	if verb == "pause" {
		cmd.Flags().StringVar(&reason, "reason", "", "why (required; shown in status and kept in the audit trail)")
	}
	return cmd
}
