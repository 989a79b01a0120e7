package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func (c *cli) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Is feedback flowing? Lag, dead letters, freshness and breakers per stage",
		Long: `status asks every stage: its consumer lag, open dead letters, when it last processed an
event, its rate, its destinations' breakers and pauses, and which instances answer.
It exits 1 when the pipeline is not healthy (the problems are listed), so it can gate a script.`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := call(c, adminv1.AdminServiceClient.GetPipelineStatus, &adminv1.GetPipelineStatusRequest{})
			if err != nil {
				return err
			}
			if !st.Healthy {
				c.code = exitFailed
			}
			return c.emit(st, func(w *tabwriter.Writer) { c.statusTable(w, st) })
		},
	}
}

func (c *cli) statusTable(w *tabwriter.Writer, st *adminv1.GetPipelineStatusResponse) {
	fmt.Fprintln(w, "STAGE\tLAG\tDLQ\tLAST EVENT\tRATE/s\tSTATE\tINSTANCES")
	for _, s := range st.Stages {
		var br []string
		for _, d := range s.Destinations {
			b := d.Name + ":" + short(d.Breaker, "BREAKER_STATE_")
			switch {
			case d.Breaker == adminv1.BreakerState_BREAKER_STATE_UNSPECIFIED && d.Paused: // a stage's consumer: no breaker
				b = d.Name + ":paused"
			case d.Breaker == adminv1.BreakerState_BREAKER_STATE_UNSPECIFIED:
				b = d.Name + ":consuming"
			case d.Paused:
				b += "(paused)"
			}
			br = append(br, b)
		}
		inst := fmt.Sprint(len(s.Instances))
		if len(s.Unreachable) > 0 {
			inst += fmt.Sprintf(" (%d down)", len(s.Unreachable))
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%.1f\t%s\t%s\n", s.Name, s.Lag, s.DlqDepth, ago(s.LastProcessedAt), s.Throughput, orDash(strings.Join(br, " ")), inst)
	}
	_ = w.Flush()
	if st.Healthy {
		fmt.Fprintln(c.out, "\nhealthy: feedback is flowing")
	} else {
		fmt.Fprintln(c.out, "\nNOT HEALTHY:")
		for _, p := range st.Problems {
			fmt.Fprintln(c.out, "  - "+p)
		}
	}
	if len(st.RecentDrift) > 0 {
		fmt.Fprintf(c.out, "\nnew payload fields in the last 24h: %d (e.g. %s %s %s)\n", len(st.RecentDrift),
			st.RecentDrift[0].Provider, st.RecentDrift[0].EventType, st.RecentDrift[0].Path)
	}
}
