// Command closedloopctl is the operator's CLI for the closedloop admin API.
//
//	export CLOSEDLOOP_ADMIN_ADDR=admin:9097 CLOSEDLOOP_ADMIN_TOKEN=...
//	closedloopctl status
//	closedloopctl dlq ls sink-warehouse --since 24h
//	closedloopctl dlq replay sink-warehouse/0/42
//
// Run `closedloopctl help` for every command. Exit codes: 0 done, 1 failed,
// 2 usage error, 3 not allowed (token missing, wrong or without the role),
// 4 not found, 5 done in part (some items skipped; they are listed).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitDenied   = 3
	exitNotFound = 4
	exitPartial  = 5
)

const usage = `closedloopctl — operate a closedloop pipeline through its admin API.

Usage: closedloopctl [global flags] <command> [arguments] [flags]

Commands:
  status                          is feedback flowing? lag, dead letters, freshness, breakers per stage
  sources [name]                  configured webhook sources and their ingest tokens (ids only)
  tokens issue <source>           a new ingest URL for a source (shown once; at most two per source)
  tokens revoke <source> <id>     revoke a token: its URL answers 404 within a second
  test-event <source>             a signed test webhook through the real ingress: when it reached each stage and sink
  pause <sink> [destination] --reason r   stop deliveries (every instance); Kafka keeps the backlog
                                  (normalizer and enricher pause those stages the same way)
  resume <sink> [destination]     deliver again
  dlq ls <sink>                   a sink's open dead letters, newest first (--all: resolved too)
  dlq show <id>                   one dead letter: the error, every attempt, the event
  dlq replay <id>...              deliver dead letters again (after fixing the cause), once per replay
  dlq replay --sink <sink> ...    ... every open one matching the filter flags (try --dry-run first)
  dlq discard <id>... --reason r  mark dead letters handled without delivering them

  replay raw --since 2h [--until t] [--source s] [--dry-run] [--rate 500]
                                  a time range of the raw topic back through the normalizer
                                  (after a mapping fix: the warehouse rows are rewritten)
  replay normalized --sink s --since 2h [--filter CEL] ...   a range into one sink
  replay ls | watch <job> | cancel <job>    jobs, live progress, stop one

Filter flags (dlq ls, and dlq replay/discard with --sink): --since 24h|2026-11-20T00:00:00Z,
  --until, --class permanent|exhausted, --provider delighted, --destination <webhook endpoint>

Global flags (before the command; or the environment):
  --addr host:port     admin gRPC address   (CLOSEDLOOP_ADMIN_ADDR, default 127.0.0.1:9097)
  --token t            bearer token         (CLOSEDLOOP_ADMIN_TOKEN)
  -o table|json        output format        (default table)
  --tls, --ca file     TLS, with a CA to trust (CLOSEDLOOP_ADMIN_TLS=true, CLOSEDLOOP_ADMIN_CA); --cert/--key for mTLS
  --timeout 30s        per call

Exit codes: 0 done, 1 failed, 2 usage, 3 not allowed, 4 not found, 5 done in part.
`

type cli struct {
	out     io.Writer
	json    bool
	timeout time.Duration
	client  adminv1.AdminServiceClient
	token   string
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	g := flag.NewFlagSet("closedloopctl", flag.ContinueOnError)
	g.SetOutput(stderr)
	g.Usage = func() { fmt.Fprint(stderr, usage) }
	addr := g.String("addr", envOr("CLOSEDLOOP_ADMIN_ADDR", "127.0.0.1:9097"), "admin gRPC address")
	token := g.String("token", os.Getenv("CLOSEDLOOP_ADMIN_TOKEN"), "bearer token")
	output := g.String("o", "table", "output: table or json")
	useTLS := g.Bool("tls", envOr("CLOSEDLOOP_ADMIN_TLS", "") == "true", "use TLS")
	ca := g.String("ca", os.Getenv("CLOSEDLOOP_ADMIN_CA"), "CA certificate to trust (PEM)")
	cert := g.String("cert", "", "client certificate (mTLS)")
	key := g.String("key", "", "client key (mTLS)")
	timeout := g.Duration("timeout", 30*time.Second, "per call")
	if err := g.Parse(args); err != nil {
		return exitUsage
	}
	rest := g.Args()
	if len(rest) == 0 || rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" {
		fmt.Fprint(stdout, usage)
		if len(rest) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "-o %q: table or json\n", *output)
		return exitUsage
	}
	creds := insecure.NewCredentials()
	if *useTLS || *ca != "" || *cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if *ca != "" {
			pem, err := os.ReadFile(*ca)
			if err != nil {
				fmt.Fprintln(stderr, "--ca:", err)
				return exitUsage
			}
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM(pem)
		}
		if *cert != "" {
			c, err := tls.LoadX509KeyPair(*cert, *key)
			if err != nil {
				fmt.Fprintln(stderr, "--cert/--key:", err)
				return exitUsage
			}
			tc.Certificates = []tls.Certificate{c}
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	defer conn.Close()
	c := &cli{out: stdout, json: *output == "json", timeout: *timeout, client: adminv1.NewAdminServiceClient(conn), token: *token}
	code, err := c.dispatch(rest)
	if err != nil {
		fmt.Fprintln(stderr, "closedloopctl:", describe(err, *addr))
		if code == exitOK || code == exitFailed {
			code = exitCode(err)
		}
	}
	return code
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg + " (closedloopctl help)" }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return exitDenied
	case codes.NotFound:
		return exitNotFound
	case codes.InvalidArgument:
		return exitUsage
	}
	return exitFailed
}

func describe(err error, addr string) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("the admin service at %s is not reachable or its backend failed: %s (check --addr / CLOSEDLOOP_ADMIN_ADDR)", addr, st.Message())
	case codes.Unauthenticated:
		return "not signed in: " + st.Message()
	case codes.PermissionDenied:
		return "not allowed: " + st.Message()
	}
	return strings.ToLower(st.Code().String()[:1]) + st.Code().String()[1:] + ": " + st.Message()
}

func (c *cli) ctx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	return ctx, cancel
}

func (c *cli) dispatch(args []string) (int, error) {
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "status":
		return c.status()
	case "sources":
		if len(rest) > 1 {
			return exitUsage, usageError{"sources [name]"}
		}
		return c.sources(rest)
	case "tokens":
		if len(rest) == 0 {
			return exitUsage, usageError{"tokens issue <source> | tokens revoke <source> <id>"}
		}
		switch rest[0] {
		case "issue":
			if len(rest) != 2 {
				return exitUsage, usageError{"tokens issue <source>"}
			}
			return c.issue(rest[1])
		case "revoke":
			if len(rest) != 3 {
				return exitUsage, usageError{"tokens revoke <source> <token id>"}
			}
			return c.revoke(rest[1], rest[2])
		}
		return exitUsage, usageError{"tokens: issue or revoke, not " + rest[0]}
	case "pause", "resume":
		return c.pause(cmd, rest)
	case "replay":
		return c.replay(rest)
	case "test-event":
		return c.testEvent(rest)
	case "dlq":
		if len(rest) == 0 {
			return exitUsage, usageError{"dlq ls|show|replay|discard"}
		}
		switch rest[0] {
		case "ls":
			return c.dlqList(rest[1:])
		case "show":
			if len(rest) != 2 {
				return exitUsage, usageError{"dlq show <id>"}
			}
			return c.dlqShow(rest[1])
		case "replay", "discard":
			return c.dlqResolve(rest[0], rest[1:])
		}
		return exitUsage, usageError{"dlq: ls, show, replay or discard, not " + rest[0]}
	}
	return exitUsage, usageError{"unknown command " + cmd}
}

func (c *cli) emit(m proto.Message, table func(w *tabwriter.Writer)) {
	if c.json {
		b, _ := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(m)
		fmt.Fprintln(c.out, string(b))
		return
	}
	w := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
	table(w)
	_ = w.Flush()
}

func ago(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	d := time.Since(ts.AsTime())
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return ts.AsTime().UTC().Format("2006-01-02 15:04")
}

func short(enum fmt.Stringer, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(enum.String(), prefix))
}

func (c *cli) status() (int, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	st, err := c.client.GetPipelineStatus(ctx, &adminv1.GetPipelineStatusRequest{})
	if err != nil {
		return exitFailed, err
	}
	c.emit(st, func(w *tabwriter.Writer) {
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
	})
	if !st.Healthy {
		return exitFailed, nil
	}
	return exitOK, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) sources(names []string) (int, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.client.ListSources(ctx, &adminv1.ListSourcesRequest{})
	if len(names) == 1 {
		var one *adminv1.GetSourceResponse
		one, err = c.client.GetSource(ctx, &adminv1.GetSourceRequest{Name: names[0]})
		if err == nil {
			res = &adminv1.ListSourcesResponse{Sources: []*adminv1.Source{one.Source}}
		}
	}
	if err != nil {
		return exitFailed, err
	}
	c.emit(res, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "SOURCE\tPROVIDER\tTOKEN ID\tISSUED\tBY\tURL PREFIX")
		for _, s := range res.Sources {
			if len(s.Tokens) == 0 {
				fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t%s\n", s.Name, s.Provider, s.UrlPrefix)
			}
			for _, t := range s.Tokens {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Provider, t.TokenId, ago(t.CreatedAt), t.CreatedBy, s.UrlPrefix)
			}
			if s.StaticTokens > 0 {
				fmt.Fprintf(w, "%s\t%s\t(%d from the pipeline file)\t\t\t\n", s.Name, s.Provider, s.StaticTokens)
			}
		}
	})
	return exitOK, nil
}

func (c *cli) issue(source string) (int, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.client.IssueIngestToken(ctx, &adminv1.IssueIngestTokenRequest{Source: source})
	if err != nil {
		return exitFailed, err
	}
	c.emit(res, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "token %s issued for %s. The webhook URL — shown only now, store it with the provider:\n\n  %s\n\n", res.Token.TokenId, source, res.Url)
		fmt.Fprintf(w, "Every ingress accepts it within a second. Revoke the old one when the provider uses this one:\n  closedloopctl tokens revoke %s <old id>\n", source)
	})
	return exitOK, nil
}

func (c *cli) revoke(source, id string) (int, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.client.RevokeIngestToken(ctx, &adminv1.RevokeIngestTokenRequest{Source: source, TokenId: id})
	if err != nil {
		return exitFailed, err
	}
	c.emit(res, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "token %s of %s revoked: its URL answers 404 within a second.\n", id, source)
	})
	return exitOK, nil
}

// filterFlags adds the dead-letter filter flags to fs.
func filterFlags(fs *flag.FlagSet) func(sink string) (*adminv1.DeadLetterFilter, error) {
	since := fs.String("since", "", "dead-lettered since: a duration back (24h) or a time (RFC 3339)")
	until := fs.String("until", "", "dead-lettered before: a duration back or a time")
	class := fs.String("class", "", "permanent or exhausted")
	provider := fs.String("provider", "", "only events of this provider")
	dest := fs.String("destination", "", "only this destination (webhook endpoint)")
	all := fs.Bool("all", false, "include resolved (replayed, discarded) ones")
	return func(sink string) (*adminv1.DeadLetterFilter, error) {
		f := &adminv1.DeadLetterFilter{Sink: sink, Provider: *provider, Destination: *dest, IncludeResolved: *all}
		for _, t := range []struct {
			v   string
			dst **timestamppb.Timestamp
		}{{*since, &f.Since}, {*until, &f.Until}} {
			if t.v == "" {
				continue
			}
			if d, err := time.ParseDuration(t.v); err == nil {
				*t.dst = timestamppb.New(time.Now().Add(-d))
			} else if at, err := time.Parse(time.RFC3339, t.v); err == nil {
				*t.dst = timestamppb.New(at)
			} else {
				return nil, usageError{fmt.Sprintf("%q is neither a duration (24h) nor an RFC 3339 time", t.v)}
			}
		}
		switch *class {
		case "":
		case "permanent":
			f.ErrorClass = sinkv1.ErrorClass_ERROR_CLASS_PERMANENT
		case "exhausted":
			f.ErrorClass = sinkv1.ErrorClass_ERROR_CLASS_EXHAUSTED
		default:
			return nil, usageError{"--class: permanent or exhausted"}
		}
		return f, nil
	}
}

// parseMixed parses flags that may come after positional arguments.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *cli) dlqList(args []string) (int, error) {
	fs := flag.NewFlagSet("dlq ls", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	filter := filterFlags(fs)
	limit := fs.Int("limit", 50, "most entries")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exitUsage, err
	}
	if len(pos) != 1 {
		return exitUsage, usageError{"dlq ls <sink> (e.g. sink-warehouse)"}
	}
	f, err := filter(pos[0])
	if err != nil {
		return exitUsage, err
	}
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.client.ListDeadLetters(ctx, &adminv1.ListDeadLettersRequest{Filter: f, PageSize: int32(*limit)})
	if err != nil {
		return exitFailed, err
	}
	c.emit(res, func(w *tabwriter.Writer) {
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
	return exitOK, nil
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func (c *cli) dlqShow(id string) (int, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.client.GetDeadLetter(ctx, &adminv1.GetDeadLetterRequest{Id: id})
	if err != nil {
		return exitFailed, err
	}
	c.emit(res, func(w *tabwriter.Writer) {
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
		if proto.Unmarshal(dl.Event, &ev) == nil {
			ev.RawPayload = nil
			b, _ := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(&ev)
			fmt.Fprintf(c.out, "\nevent (raw payload left out):\n%s\n", b)
		}
	})
	return exitOK, nil
}

func (c *cli) dlqResolve(action string, args []string) (int, error) {
	fs := flag.NewFlagSet("dlq "+action, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	filter := filterFlags(fs)
	sink := fs.String("sink", "", "select by filter on this sink instead of by ids")
	dry := fs.Bool("dry-run", false, "count only")
	reason := fs.String("reason", "", "why (discard; kept in the audit trail)")
	ids, err := parseMixed(fs, args)
	if err != nil {
		return exitUsage, err
	}
	var f *adminv1.DeadLetterFilter
	switch {
	case *sink != "" && len(ids) > 0:
		return exitUsage, usageError{"give ids or --sink with filters, not both"}
	case *sink != "":
		if f, err = filter(*sink); err != nil {
			return exitUsage, err
		}
	case len(ids) == 0:
		return exitUsage, usageError{"dlq " + action + " <id>... or --sink <sink> [filters]"}
	}
	if action == "discard" && *reason == "" && !*dry {
		return exitUsage, usageError{"dlq discard needs --reason (it goes to the audit trail)"}
	}
	ctx, cancel := c.ctx()
	defer cancel()
	var n int32
	var skipped []string
	if action == "replay" {
		res, err := c.client.ReplayDeadLetters(ctx, &adminv1.ReplayDeadLettersRequest{Ids: ids, Filter: f, DryRun: *dry})
		if err != nil && res == nil {
			return exitFailed, err
		}
		n, skipped = res.Replayed, res.Skipped
		c.emit(res, func(w *tabwriter.Writer) {
			switch {
			case *dry:
				fmt.Fprintf(w, "dry run: %d dead letter(s) would be replayed\n", n)
			case n > 0:
				fmt.Fprintf(w, "replayed %d dead letter(s) as %s: each is delivered again once, by its sink\n", n, res.ReplayId)
			default:
				fmt.Fprintln(w, "nothing replayed")
			}
		})
		if err != nil {
			return exitFailed, err
		}
	} else {
		res, err := c.client.DiscardDeadLetters(ctx, &adminv1.DiscardDeadLettersRequest{Ids: ids, Filter: f, DryRun: *dry, Reason: *reason})
		if err != nil {
			return exitFailed, err
		}
		n, skipped = res.Discarded, res.Skipped
		c.emit(res, func(w *tabwriter.Writer) {
			if *dry {
				fmt.Fprintf(w, "dry run: %d dead letter(s) would be discarded\n", n)
			} else {
				fmt.Fprintf(w, "discarded %d dead letter(s)\n", n)
			}
		})
	}
	if len(skipped) > 0 {
		if !c.json {
			fmt.Fprintln(c.out, "skipped:")
			for _, s := range skipped {
				fmt.Fprintln(c.out, "  - "+s)
			}
		}
		return exitPartial, nil
	}
	if n == 0 && len(ids) > 0 {
		return exitNotFound, nil
	}
	return exitOK, nil
}

func (c *cli) pause(cmd string, args []string) (int, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	reason := fs.String("reason", "", "why (shown in the status, kept in the audit trail)")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exitUsage, err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return exitUsage, usageError{cmd + " <sink> [destination]"}
	}
	dest := ""
	if len(pos) == 2 {
		dest = pos[1]
	}
	if cmd == "pause" && *reason == "" {
		return exitUsage, usageError{"pause needs --reason (on-call will want to know)"}
	}
	ctx, cancel := c.ctx()
	defer cancel()
	var instances []*adminv1.InstanceDestinations
	var msg proto.Message
	var callErr error
	if cmd == "pause" {
		res, err := c.client.PauseSink(ctx, &adminv1.PauseSinkRequest{Sink: pos[0], Destination: dest, Reason: *reason})
		if res != nil {
			instances, msg = res.Instances, res
		}
		callErr = err
	} else {
		res, err := c.client.ResumeSink(ctx, &adminv1.ResumeSinkRequest{Sink: pos[0], Destination: dest})
		if res != nil {
			instances, msg = res.Instances, res
		}
		callErr = err
	}
	if msg == nil {
		return exitFailed, callErr
	}
	c.emit(msg, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "INSTANCE	DESTINATION	PAUSED	BREAKER	REASON / ERROR")
		for _, in := range instances {
			if in.Error != "" {
				fmt.Fprintf(w, "%s\t-\t?\t?\t%s\n", in.Address, in.Error)
			}
			for _, d := range in.Destinations {
				fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\n", in.Address, d.Name, d.Paused, short(d.Breaker, "BREAKER_STATE_"), d.PauseReason)
			}
		}
	})
	if callErr != nil {
		return exitCode(callErr), callErr
	}
	return exitOK, nil
}

func (c *cli) replay(args []string) (int, error) {
	if len(args) == 0 {
		return exitUsage, usageError{"replay raw|normalized|ls|watch|cancel"}
	}
	switch args[0] {
	case "ls":
		ctx, cancel := c.ctx()
		defer cancel()
		res, err := c.client.ListReplays(ctx, &adminv1.ListReplaysRequest{})
		if err != nil {
			return exitFailed, err
		}
		c.emit(res, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "JOB\tFROM\tSTATE\tSTARTED\tBY\tPRODUCED\tMATCHED\tSCANNED\tTOTAL")
			for _, j := range res.Jobs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", j.Id, short(j.Request.GetFrom(), "REPLAY_FROM_"), short(j.State, "REPLAY_STATE_"),
					ago(j.StartedAt), j.StartedBy, j.Produced, j.Matched, j.Scanned, j.Total)
			}
		})
		return exitOK, nil
	case "watch":
		if len(args) != 2 {
			return exitUsage, usageError{"replay watch <job>"}
		}
		return c.watch(args[1])
	case "cancel":
		if len(args) != 2 {
			return exitUsage, usageError{"replay cancel <job>"}
		}
		ctx, cancel := c.ctx()
		defer cancel()
		res, err := c.client.CancelReplay(ctx, &adminv1.CancelReplayRequest{Id: args[1]})
		if err != nil {
			return exitFailed, err
		}
		c.emit(res, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "job %s: %s after %d of %d records produced\n", res.Job.Id, short(res.Job.State, "REPLAY_STATE_"), res.Job.Produced, res.Job.Matched)
		})
		return exitOK, nil
	case "raw", "normalized":
	default:
		return exitUsage, usageError{"replay raw|normalized|ls|watch|cancel, not " + args[0]}
	}
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	since := fs.String("since", "", "start of the range: a duration back (2h) or a time (RFC 3339)")
	until := fs.String("until", "", "end of the range (default now)")
	source := fs.String("source", "", "only this source")
	sinkName := fs.String("sink", "", "the sink to replay into (normalized)")
	filter := fs.String("filter", "", "a CEL expression over event (normalized)")
	dry := fs.Bool("dry-run", false, "count only")
	ratePS := fs.Float64("rate", 500, "records per second at most")
	detach := fs.Bool("detach", false, "start the job and return (watch it with replay watch)")
	if _, err := parseMixed(fs, args[1:]); err != nil {
		return exitUsage, err
	}
	req := &adminv1.StartReplayRequest{From: adminv1.ReplayFrom_REPLAY_FROM_RAW, Sink: *sinkName, Source: *source, Filter: *filter,
		DryRun: *dry, RatePerSecond: *ratePS}
	if args[0] == "normalized" {
		req.From = adminv1.ReplayFrom_REPLAY_FROM_NORMALIZED
	}
	if *since == "" {
		return exitUsage, usageError{"replay needs --since"}
	}
	for _, t := range []struct {
		v   string
		dst **timestamppb.Timestamp
	}{{*since, &req.Since}, {*until, &req.Until}} {
		if t.v == "" {
			continue
		}
		ts, err := parseWhen(t.v)
		if err != nil {
			return exitUsage, err
		}
		*t.dst = ts
	}
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.client.StartReplay(ctx, req)
	if err != nil {
		return exitFailed, err
	}
	if !c.json {
		fmt.Fprintf(c.out, "replay job %s started (replay id %s)\n", res.Job.Id, res.Job.ReplayId)
	}
	if *detach {
		if c.json {
			c.emit(res, nil)
		}
		return exitOK, nil
	}
	return c.watch(res.Job.Id)
}

// watch follows a job with a progress bar until it ends.
func (c *cli) watch(id string) (int, error) {
	ctx := context.Background()
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	stream, err := c.client.WatchReplay(ctx, &adminv1.WatchReplayRequest{Id: id})
	if err != nil {
		return exitFailed, err
	}
	var last *adminv1.ReplayJob
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return exitFailed, err
		}
		last = msg.Job
		if !c.json {
			fmt.Fprintf(c.out, "\r%s %s", bar(last.Scanned, last.Total, 30), progressText(last))
		}
	}
	if last == nil {
		return exitFailed, fmt.Errorf("no progress from job %s", id)
	}
	if c.json {
		c.emit(last, nil)
	} else {
		fmt.Fprintf(c.out, "\njob %s %s", last.Id, short(last.State, "REPLAY_STATE_"))
		if last.Error != "" {
			fmt.Fprintf(c.out, ": %s", last.Error)
		}
		fmt.Fprintln(c.out)
	}
	if last.State != adminv1.ReplayState_REPLAY_STATE_DONE {
		return exitFailed, nil
	}
	return exitOK, nil
}

func progressText(j *adminv1.ReplayJob) string {
	verb := "produced"
	if j.Request.GetDryRun() {
		verb = "would replay"
	}
	return fmt.Sprintf("%d/%d scanned, %d matched, %d %s  ", j.Scanned, j.Total, j.Matched, map[bool]int64{true: j.Matched, false: j.Produced}[j.Request.GetDryRun()], verb)
}

func bar(done, total int64, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat("=", width) + "]"
	}
	n := int(int64(width) * min(done, total) / total)
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
}

func parseWhen(v string) (*timestamppb.Timestamp, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return timestamppb.New(time.Now().Add(-d)), nil
	}
	if at, err := time.Parse(time.RFC3339, v); err == nil {
		return timestamppb.New(at), nil
	}
	return nil, usageError{fmt.Sprintf("%q is neither a duration (2h) nor an RFC 3339 time", v)}
}

func (c *cli) testEvent(args []string) (int, error) {
	fs := flag.NewFlagSet("test-event", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for every sink")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exitUsage, err
	}
	if len(pos) != 1 {
		return exitUsage, usageError{"test-event <source>"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait+10*time.Second)
	defer cancel()
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	res, err := c.client.SendTestEvent(ctx, &adminv1.SendTestEventRequest{Source: pos[0], TimeoutSeconds: int32(wait.Seconds())})
	if err != nil {
		return exitFailed, err
	}
	c.emit(res, func(w *tabwriter.Writer) {
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
	if !res.Complete {
		return exitFailed, nil
	}
	return exitOK, nil
}
