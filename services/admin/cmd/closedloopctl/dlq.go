package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

const filterHelp = `Filters: --since 24h|2026-11-20T00:00:00Z, --until, --class permanent|exhausted,
--provider delighted, --destination <destination name>.`

func (c *cli) dlqCmd() *cobra.Command {
	return group("dlq", "Dead letters: list, show, replay after a fix, or discard",
		c.dlqLsCmd(), c.dlqShowCmd(), c.dlqResolveCmd("replay"), c.dlqResolveCmd("discard"))
}

// deadLetterFilter is the filter flags of dlq ls, replay and discard.
type deadLetterFilter struct {
	since, until, class, provider, destination string
	all                                        bool
}

func (d *deadLetterFilter) flags(f *flagSet) {
	f.StringVar(&d.since, "since", "", "dead-lettered since: a duration back (24h) or a time (RFC 3339)")
	f.StringVar(&d.until, "until", "", "dead-lettered before: a duration back or a time")
	f.StringVar(&d.class, "class", "", "permanent or exhausted")
	f.StringVar(&d.provider, "provider", "", "only events of this provider")
	f.StringVar(&d.destination, "destination", "", "only this destination")
	f.BoolVar(&d.all, "all", false, "include resolved (replayed, discarded) ones")
}

func (d *deadLetterFilter) build(sink string) (*adminv1.DeadLetterFilter, error) {
	f := &adminv1.DeadLetterFilter{Sink: sink, Provider: d.provider, Destination: d.destination, IncludeResolved: d.all}
	for _, t := range []struct {
		flag, v string
		dst     **timestamppb.Timestamp
	}{{"since", d.since, &f.Since}, {"until", d.until, &f.Until}} {
		if t.v == "" {
			continue
		}
		ts, err := parseWhen(t.flag, t.v)
		if err != nil {
			return nil, err
		}
		*t.dst = ts
	}
	switch d.class {
	case "":
	case "permanent":
		f.ErrorClass = sinkv1.ErrorClass_ERROR_CLASS_PERMANENT
	case "exhausted":
		f.ErrorClass = sinkv1.ErrorClass_ERROR_CLASS_EXHAUSTED
	default:
		return nil, usagef("--class %q: permanent or exhausted", d.class)
	}
	return f, nil
}

func (c *cli) dlqLsCmd() *cobra.Command {
	var filter deadLetterFilter
	var limit int
	cmd := &cobra.Command{
		Use:     "ls <sink>",
		Aliases: []string{"list"},
		Short:   "A sink's open dead letters, newest first (--all: resolved ones too)",
		Long:    "ls lists a sink's dead letters (sink-warehouse, sink-webhook, ...), newest first.\n\n" + filterHelp,
		Example: "  closedloopctl dlq ls sink-warehouse --since 24h --class permanent",
		Args:    exactly(1, "a sink (e.g. sink-warehouse)"),
		RunE: func(_ *cobra.Command, args []string) error {
			if limit < 1 {
				return usagef("--limit must be at least 1")
			}
			f, err := filter.build(args[0])
			if err != nil {
				return err
			}
			res, err := call(c, adminv1.AdminServiceClient.ListDeadLetters, &adminv1.ListDeadLettersRequest{Filter: f, PageSize: int32(limit)})
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tDEAD\tEVENT\tDESTINATION\tCLASS\tTRIES\tSTATE\tERROR")
				for _, d := range res.DeadLetters {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Id, ago(d.DeadAt), d.EventId, d.Destination, short(d.ErrorClass, "ERROR_CLASS_"),
						d.Attempts, short(d.State, "DEAD_LETTER_STATE_"), clip(d.Error, 60))
				}
				_ = w.Flush()
				fmt.Fprintf(c.out, "\n%d open dead letter(s) match", res.TotalUnresolved)
				if res.NextPageToken != "" {
					fmt.Fprintf(c.out, "; more than %d listed (--limit)", len(res.DeadLetters))
				}
				fmt.Fprintln(c.out, ".")
			})
		},
	}
	filter.flags(cmd.Flags())
	cmd.Flags().IntVar(&limit, "limit", 50, "most entries (at most 1000)")
	return cmd
}

func (c *cli) dlqShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show <id>",
		Short: "One dead letter: the error, every attempt, the event",
		Args:  exactly(1, "a dead letter id (<sink>/<partition>/<offset>, from dlq ls)"),
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := call(c, adminv1.AdminServiceClient.GetDeadLetter, &adminv1.GetDeadLetterRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				s, dl := res.Summary, res.DeadLetter
				fmt.Fprintf(w, "id\t%s\nsink\t%s / %s\nevent\t%s (%s)\nclass\t%s\nstate\t%s %s\ndead at\t%s\nsource\t%s partition %d offset %d\nerror\t%s\n",
					s.Id, s.Sink, s.Destination, s.EventId, s.Provider, short(s.ErrorClass, "ERROR_CLASS_"), short(s.State, "DEAD_LETTER_STATE_"), s.ReplayId,
					s.DeadAt.AsTime().UTC().Format(time.RFC3339), dl.SourceTopic, dl.SourcePartition, dl.SourceOffset, dl.Error)
				_ = w.Flush()
				fmt.Fprintln(c.out, "\nattempts:")
				for i, a := range dl.Attempts {
					fmt.Fprintf(c.out, "  %d. %s  %s  status %d  %d ms  %s\n", i+1, a.At.AsTime().UTC().Format(time.RFC3339), short(a.ErrorClass, "ERROR_CLASS_"), a.StatusCode, a.DurationMs, a.Error)
				}
				var ev feedbackv1.FeedbackEvent
				if len(dl.Event) > 0 && proto.Unmarshal(dl.Event, &ev) == nil {
					ev.RawPayload = nil
					b, _ := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(&ev)
					fmt.Fprintf(c.out, "\nevent (raw payload left out):\n%s\n", b)
				}
			})
		},
	}
}

func (c *cli) dlqResolveCmd(action string) *cobra.Command {
	var filter deadLetterFilter
	var sink, reason string
	var dry bool
	cmd := &cobra.Command{
		Use: action + " <id>... | --sink <sink> [filters]",
		Short: map[string]string{
			"replay":  "Deliver dead letters again (after fixing the cause), once per replay",
			"discard": "Mark dead letters handled without delivering them (--reason is audited)",
		}[action],
		Long: fmt.Sprintf("%s the dead letters named by id, or every open one of --sink that matches the filters\n(try --dry-run first: it only counts).\n\n%s", action, filterHelp),
		Example: map[string]string{
			"replay":  "  closedloopctl dlq replay sink-warehouse/0/42\n  closedloopctl dlq replay --sink sink-webhook --since 2h --class exhausted --dry-run",
			"discard": "  closedloopctl dlq discard sink-webhook/1/7 --reason \"customer deleted\"",
		}[action],
		Args: cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, ids []string) error {
			var f *adminv1.DeadLetterFilter
			switch {
			case sink != "" && len(ids) > 0:
				return usagef("give ids or --sink with filters, not both")
			case sink != "":
				var err error
				if f, err = filter.build(sink); err != nil {
					return err
				}
			case len(ids) == 0:
				return usagef("dlq %s needs dead letter ids, or --sink <sink> with filters", action)
			}
			if action == "discard" && reason == "" && !dry {
				return usagef("dlq discard needs --reason (it goes to the audit trail)")
			}
			var n int32
			var skipped []string
			if action == "replay" {
				res, err := call(c, adminv1.AdminServiceClient.ReplayDeadLetters, &adminv1.ReplayDeadLettersRequest{Ids: ids, Filter: f, DryRun: dry})
				if err != nil {
					return err
				}
				n, skipped = res.Replayed, res.Skipped
				if perr := c.emit(res, func(w *tabwriter.Writer) {
					switch {
					case dry:
						fmt.Fprintf(w, "dry run: %d dead letter(s) would be replayed\n", n)
					case n > 0:
						fmt.Fprintf(w, "replayed %d dead letter(s) as %s: each is delivered again once, by its sink\n", n, res.ReplayId)
					default:
						fmt.Fprintln(w, "nothing replayed")
					}
				}); perr != nil {
					return perr
				}
			} else {
				res, err := call(c, adminv1.AdminServiceClient.DiscardDeadLetters, &adminv1.DiscardDeadLettersRequest{Ids: ids, Filter: f, DryRun: dry, Reason: reason})
				if err != nil {
					return err
				}
				n, skipped = res.Discarded, res.Skipped
				if err := c.emit(res, func(w *tabwriter.Writer) {
					if dry {
						fmt.Fprintf(w, "dry run: %d dead letter(s) would be discarded\n", n)
					} else {
						fmt.Fprintf(w, "discarded %d dead letter(s)\n", n)
					}
				}); err != nil {
					return err
				}
			}
			switch {
			case len(skipped) > 0:
				if !c.structured() {
					fmt.Fprintln(c.out, "skipped:")
					for _, s := range skipped {
						fmt.Fprintln(c.out, "  - "+s)
					}
				}
				c.code = exitPartial
			case n == 0 && len(ids) > 0:
				c.code = exitNotFound
			}
			return nil
		},
	}
	filter.flags(cmd.Flags())
	cmd.Flags().StringVar(&sink, "sink", "", "select by the filters on this sink instead of by ids")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "count only; change nothing")
	if action == "discard" {
		cmd.Flags().StringVar(&reason, "reason", "", "why (required; kept in the audit trail)")
	}
	return cmd
}
