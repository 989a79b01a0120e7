// Command closedloopctl is the operator's CLI for the closedloop admin API.
//
//	export CLOSEDLOOP_ADMIN_ADDR=admin:9097 CLOSEDLOOP_ADMIN_TOKEN=...
//	closedloopctl status
//	closedloopctl dlq ls sink-warehouse --since 24h
//	closedloopctl dlq replay sink-warehouse/0/42
//
// Every command and subcommand answers --help (-h). The exit codes are part
// of the interface and kept: see exitCodes.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
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

// exitCodes is the table the root command's help prints (and the docs copy).
const exitCodes = `Exit codes:
  0  done
  1  failed (the admin or a backend could not do it; status: the pipeline is not healthy)
  2  usage error (unknown command, bad flag or argument)
  3  not allowed (token missing, wrong, or without the operator role)
  4  not found (source, sink, dead letter, job)
  5  done in part (some items were skipped; they are listed)`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// cli holds the global flags and the lazily made connection.
type cli struct {
	out, errOut io.Writer

	addr, token, output string
	useTLS              bool
	ca, cert, key       string
	timeout             time.Duration

	conn   *grpc.ClientConn
	client adminv1.AdminServiceClient
	// code, when set by a command, is the exit code of a run without error
	// (5 partial, 1 unhealthy, 4 nothing matched).
	code int
	// terminal reports whether out is a terminal (progress bars).
	terminal bool
}

// usageError is a mistake in how the command was called: exit 2.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{out: stdout, errOut: stderr, terminal: isTerminal(stdout)}
	root := c.root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if c.conn != nil {
		_ = c.conn.Close()
	}
	if err != nil {
		fmt.Fprintln(stderr, "closedloopctl:", c.describe(err))
		var u usageError
		if errors.As(err, &u) && cmd != nil {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		return exitCode(err)
	}
	return c.code
}

func (c *cli) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "closedloopctl",
		Short: "Operate a closedloop pipeline through its admin API",
		Long: `closedloopctl operates a closedloop pipeline through its admin API: is feedback flowing,
webhook sources and their ingest tokens, dead letters, pauses, replays and test events.

Connection (flags or the environment):
  --addr     CLOSEDLOOP_ADMIN_ADDR   (default 127.0.0.1:9097)
  --token    CLOSEDLOOP_ADMIN_TOKEN  (a token of the pipeline file's admin.tokens)
  --tls      CLOSEDLOOP_ADMIN_TLS=true, --ca CLOSEDLOOP_ADMIN_CA; --cert/--key for mTLS

` + exitCodes,
		Version:       version(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return usageError{"a command is required"}
		},
		PersistentPreRunE: func(*cobra.Command, []string) error {
			switch c.output {
			case "table", "json", "yaml":
				return nil
			}
			return usagef("-o %q: table, json or yaml", c.output)
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&c.addr, "addr", envOr("CLOSEDLOOP_ADMIN_ADDR", "127.0.0.1:9097"), "admin gRPC address (CLOSEDLOOP_ADMIN_ADDR)")
	f.StringVar(&c.token, "token", os.Getenv("CLOSEDLOOP_ADMIN_TOKEN"), "bearer token (CLOSEDLOOP_ADMIN_TOKEN)")
	f.StringVarP(&c.output, "output", "o", "table", "output format: table, json or yaml")
	f.BoolVar(&c.useTLS, "tls", os.Getenv("CLOSEDLOOP_ADMIN_TLS") == "true", "connect with TLS (CLOSEDLOOP_ADMIN_TLS=true)")
	f.StringVar(&c.ca, "ca", os.Getenv("CLOSEDLOOP_ADMIN_CA"), "CA certificate to trust, PEM (CLOSEDLOOP_ADMIN_CA); implies --tls")
	f.StringVar(&c.cert, "cert", "", "client certificate for mTLS, PEM; implies --tls")
	f.StringVar(&c.key, "key", "", "client key for mTLS, PEM")
	f.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of each call")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	root.AddCommand(c.statusCmd(), c.sourcesCmd(), c.tokensCmd(), c.testEventCmd(), c.pauseCmd("pause"), c.pauseCmd("resume"),
		c.dlqCmd(), c.replayCmd(), c.backfillCmd(), c.unsubscribesCmd(), c.topCmd(), c.versionCmd(), c.completionCmd())
	return root
}

// group is a command that only holds subcommands: without one (or with an
// unknown one) it is a usage error, not a silent help.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	g := &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var names []string
			for _, s := range cmd.Commands() {
				names = append(names, s.Name())
			}
			if len(args) == 0 {
				return usagef("%s needs a subcommand: %s", cmd.CommandPath(), strings.Join(names, ", "))
			}
			return usagef("unknown command %q for %s (one of: %s)", args[0], cmd.CommandPath(), strings.Join(names, ", "))
		}}
	g.AddCommand(subs...)
	return g
}

// Argument validators that fail as usage errors.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() {
			return usagef("unknown command %q", args[0])
		}
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func exactly(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s needs %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

func between(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usagef("%s needs %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// api connects on first use (help, version and completion never do).
func (c *cli) api() (adminv1.AdminServiceClient, error) {
	if c.client != nil {
		return c.client, nil
	}
	creds := insecure.NewCredentials()
	if c.useTLS || c.ca != "" || c.cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.ca != "" {
			pem, err := os.ReadFile(c.ca)
			if err != nil {
				return nil, usagef("--ca: %v", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, usagef("--ca %s holds no PEM certificate", c.ca)
			}
		}
		if c.cert != "" {
			cert, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				return nil, usagef("--cert/--key: %v", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, usagef("--addr %q: %v", c.addr, err)
	}
	c.conn, c.client = conn, adminv1.NewAdminServiceClient(conn)
	return c.client, nil
}

// ctx is a call's context: the deadline and the bearer token.
func (c *cli) ctx(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx := context.Background()
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	return ctx, cancel
}

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

func (c *cli) describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("the admin service at %s is not reachable or its backend failed: %s (check --addr / CLOSEDLOOP_ADMIN_ADDR)", c.addr, st.Message())
	case codes.Unauthenticated:
		return "not signed in: " + st.Message()
	case codes.PermissionDenied:
		return "not allowed: " + st.Message()
	}
	name := st.Code().String()
	return strings.ToLower(name[:1]) + name[1:] + ": " + st.Message()
}

// isTerminal reports whether w is a character device (a terminal): progress
// bars are drawn only there, never into a pipe or a log file.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// flagSet is for commands that add their own flags.
type flagSet = pflag.FlagSet

// call makes one admin call with the connection, the deadline and the
// token: call(c, adminv1.AdminServiceClient.ListReplays, req).
func call[Req, Res any](c *cli, method func(adminv1.AdminServiceClient, context.Context, Req, ...grpc.CallOption) (Res, error), req Req) (Res, error) {
	var zero Res
	api, err := c.api()
	if err != nil {
		return zero, err
	}
	ctx, cancel := c.ctx(c.timeout)
	defer cancel()
	return method(api, ctx, req)
}
