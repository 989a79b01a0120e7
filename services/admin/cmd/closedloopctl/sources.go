package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func (c *cli) sourcesCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "sources [name]",
		Short:             "Configured webhook sources and their ingest tokens (ids only)",
		Args:              between(0, 1, "at most one source name"),
		ValidArgsFunction: c.completeSource,
		RunE: func(_ *cobra.Command, args []string) error {
			var res *adminv1.ListSourcesResponse
			if len(args) == 1 {
				one, err := call(c, adminv1.AdminServiceClient.GetSource, &adminv1.GetSourceRequest{Name: args[0]})
				if err != nil {
					return err
				}
				res = &adminv1.ListSourcesResponse{Sources: []*adminv1.Source{one.Source}}
			} else {
				var err error
				if res, err = call(c, adminv1.AdminServiceClient.ListSources, &adminv1.ListSourcesRequest{}); err != nil {
					return err
				}
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "SOURCE\tPROVIDER\tTOKEN ID\tISSUED\tBY\tURL PREFIX")
				for _, s := range res.Sources {
					// One row per token: issued ones, then those of the
					// pipeline file together; a source with none has one row.
					for _, t := range s.Tokens {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Provider, t.TokenId, ago(t.CreatedAt), t.CreatedBy, s.UrlPrefix)
					}
					switch {
					case s.StaticTokens > 0:
						fmt.Fprintf(w, "%s\t%s\t(%d in the pipeline file)\t-\t-\t%s\n", s.Name, s.Provider, s.StaticTokens, s.UrlPrefix)
					case len(s.Tokens) == 0:
						fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t%s\n", s.Name, s.Provider, s.UrlPrefix)
					}
				}
			})
		},
	}
}

func (c *cli) tokensCmd() *cobra.Command {
	issue := &cobra.Command{
		Use:               "issue <source>",
		Short:             "A new ingest URL for a source (shown once; at most two active per source)",
		Args:              exactly(1, "a source name"),
		ValidArgsFunction: c.completeSource,
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := call(c, adminv1.AdminServiceClient.IssueIngestToken, &adminv1.IssueIngestTokenRequest{Source: args[0]})
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "token %s issued for %s. The webhook URL — shown only now, store it with the provider:\n\n  %s\n\n", res.Token.TokenId, args[0], res.Url)
				fmt.Fprintf(w, "Every ingress accepts it within a second. Revoke the old one when the provider uses this one:\n  closedloopctl tokens revoke %s <old id>\n", args[0])
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke <source> <token id>",
		Short: "Revoke an ingest token: its URL answers 404 within a second",
		Args:  exactly(2, "a source and a token id (closedloopctl sources lists them)"),
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := call(c, adminv1.AdminServiceClient.RevokeIngestToken, &adminv1.RevokeIngestTokenRequest{Source: args[0], TokenId: args[1]})
			if err != nil {
				return err
			}
			return c.emit(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "token %s of %s revoked: its URL answers 404 within a second.\n", args[1], args[0])
			})
		},
	}
	return group("tokens", "Issue and revoke the ingest tokens in a source's webhook URL", issue, revoke)
}

// completeSource completes a source name argument from the admin's list
// (nothing when it cannot be reached: completion never fails loudly).
func (c *cli) completeSource(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	api, err := c.api()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := c.ctx(3 * time.Second)
	defer cancel()
	res, err := api.ListSources(ctx, &adminv1.ListSourcesRequest{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []cobra.Completion
	for _, s := range res.Sources {
		names = append(names, cobra.CompletionWithDesc(s.Name, s.Provider))
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
