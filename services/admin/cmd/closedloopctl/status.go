package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func (c *cli) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Is feedback flowing? Lag, dead letters, freshness and breakers per stage",
		Long: `status asks every stage: its consumer lag, open dead letters, when it last processed an
event, its rate, its destinations' breakers and pauses, and which instances answer.
With a warehouse sink it also shows how the loop closed over the last 24 hours: the
detractors, the share with a helpdesk ticket, a reply and a solved ticket, and the median
times from the detractor's arrival.
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
	if lc := st.LoopClosure; lc != nil {
		fmt.Fprint(c.out, loopLines(lc))
	}
	if len(st.Reconciliation) > 0 {
		fmt.Fprintln(c.out, "\nreconciliation, last 24h (webhooks that never arrived, found through the provider's API):")
		for _, r := range st.Reconciliation {
			line := fmt.Sprintf("  %s: %d events arrived only through reconciliation, of %d checked", r.Source, r.Found_24H, r.Checked_24H)
			if r.Checked_24H > 0 {
				line += fmt.Sprintf(" (%.1f%% missed by webhooks)", 100*float64(r.Found_24H)/float64(r.Checked_24H))
			}
			line += "; last run " + ago(r.LastRunAt)
			if r.LastError != "" {
				line += ": " + clip(r.LastError, 80)
			}
			fmt.Fprintln(c.out, line)
		}
	}
	if len(st.RecentDrift) > 0 {
		fmt.Fprintf(c.out, "\nnew payload fields in the last 24h: %d (e.g. %s %s %s)\n", len(st.RecentDrift),
			st.RecentDrift[0].Provider, st.RecentDrift[0].EventType, st.RecentDrift[0].Path)
	}
}

// loopLines is the loop-closure part of the status.
func loopLines(lc *adminv1.LoopClosure) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nloop closure, last 24h: %d detractors", lc.Detractors)
	if lc.Detractors == 0 {
		b.WriteString("\n")
		return b.String()
	}
	pct := func(n int64) string { return fmt.Sprintf("%d (%.0f%%)", n, 100*float64(n)/float64(lc.Detractors)) }
	fmt.Fprintf(&b, ", %s with a ticket, %s replied, %s solved\n", pct(lc.Ticketed), pct(lc.Replied), pct(lc.Solved))
	med := func(n int64, s float64) string {
		if n == 0 {
			return "-"
		}
		return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
	}
	fmt.Fprintf(&b, "  median from the detractor: ticket %s, first reply %s, solved %s\n",
		med(lc.Ticketed, lc.MedianToTicketSeconds), med(lc.Replied, lc.MedianToReplySeconds), med(lc.Solved, lc.MedianToSolvedSeconds))
	for _, s := range lc.Systems {
		fmt.Fprintf(&b, "  %s: %d tickets, %d solved, median to solved %s\n", s.System, s.Ticketed, s.Solved, med(s.Solved, s.MedianToSolvedSeconds))
	}
	return b.String()
}
