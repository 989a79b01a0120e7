package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// every command path of the tree, and the tree's commands.
func commandPaths(t *testing.T) [][]string {
	t.Helper()
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, s := range c.Commands() {
			if s.Hidden || s.Name() == "help" {
				continue
			}
			walk(s, append(append([]string(nil), path...), s.Name()))
		}
	}
	walk((&cli{}).root(), nil)
	if len(paths) < 20 {
		t.Fatalf("only %d commands found", len(paths))
	}
	return paths
}

// --help and -h, before or after the arguments, print that command's usage
// and flags to stdout and exit 0, without connecting anywhere.
func TestEveryCommandAnswersHelp(t *testing.T) {
	for _, path := range commandPaths(t) {
		for _, h := range []string{"--help", "-h"} {
			args := append(append([]string(nil), path...), h)
			code, out, errOut := runCLI(append(args, "--addr", "127.0.0.1:1")...)
			if code != exitOK || errOut != "" {
				t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
				continue
			}
			want := "closedloopctl"
			if len(path) > 0 {
				want += " " + strings.Join(path, " ")
			}
			if !strings.Contains(out, "Usage:") || !strings.Contains(out, want) || !strings.Contains(out, "--output") {
				t.Errorf("%q: the help is not this command's:\n%s", args, out)
			}
		}
	}
	// help <command> too, and a flag before the command.
	code, out, _ := runCLI("help", "dlq", "ls")
	if code != 0 || !strings.Contains(out, "--since") || !strings.Contains(out, "closedloopctl dlq ls <sink>") {
		t.Fatalf("help dlq ls: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI("-o", "json", "dlq", "replay", "-h")
	if code != 0 || !strings.Contains(out, "--dry-run") {
		t.Fatalf("-o json dlq replay -h: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI("--help")
	if code != 0 || !strings.Contains(out, "Exit codes:") {
		t.Fatalf("--help: exit %d, no exit code table\n%s", code, out)
	}
}

func TestUsageMistakesExitTwoAndSayWhy(t *testing.T) {
	for _, args := range [][]string{
		{}, {"nosuch"}, {"dlq"}, {"dlq", "nosuch"}, {"dlq", "ls"}, {"dlq", "replay"}, {"dlq", "replay", "a/0/1", "--sink", "s"},
		{"dlq", "discard", "a/0/1"}, {"tokens"}, {"tokens", "issue"}, {"tokens", "revoke", "a"}, {"pause", "sink-warehouse"},
		{"-o", "xml", "status"}, {"status", "-o", "xml"}, {"status", "extra"}, {"sources", "a", "b"}, {"status", "--nosuch"},
		{"dlq", "ls", "sink-warehouse", "--since", "yesterday"}, {"dlq", "ls", "sink-warehouse", "--class", "bad"},
		{"dlq", "ls", "sink-warehouse", "--limit", "0"}, {"replay"}, {"replay", "raw"}, {"replay", "raw", "--until", "1h"},
		{"replay", "watch"}, {"test-event"}, {"test-event", "s", "--wait", "0s"}, {"version", "x"}, {"completion", "tcsh"},
	} {
		code, out, errOut := runCLI(append(args, "--addr", "127.0.0.1:1")...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s%s)", args, code, exitUsage, out, errOut)
			continue
		}
		if !strings.HasPrefix(errOut, "closedloopctl: ") && !strings.Contains(errOut, "Error:") {
			t.Errorf("%q: stderr does not say what was wrong: %q", args, errOut)
		}
	}
}

func TestVersionAndCompletion(t *testing.T) {
	code, out, _ := runCLI("version")
	if code != 0 || !strings.HasPrefix(out, "closedloopctl ") {
		t.Fatalf("version: exit %d %q", code, out)
	}
	code, out, _ = runCLI("version", "-o", "json")
	var v map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["version"] == "" {
		t.Fatalf("version -o json: exit %d %q", code, out)
	}
	code, out, _ = runCLI("--version")
	if code != 0 || !strings.Contains(out, "closedloopctl") {
		t.Fatalf("--version: exit %d %q", code, out)
	}
	for shell, marker := range map[string]string{"bash": "bash completion", "zsh": "#compdef closedloopctl", "fish": "complete -c closedloopctl"} {
		code, out, _ := runCLI("completion", shell)
		if code != 0 || !strings.Contains(out, marker) {
			t.Errorf("completion %s: exit %d, no %q in %d bytes", shell, code, marker, len(out))
		}
	}
}

// fakeAdmin answers as the admin service does in the cases the exit codes
// distinguish.
type fakeAdmin struct {
	adminv1.UnimplementedAdminServiceServer
}

func (fakeAdmin) GetPipelineStatus(context.Context, *adminv1.GetPipelineStatusRequest) (*adminv1.GetPipelineStatusResponse, error) {
	return &adminv1.GetPipelineStatusResponse{Healthy: false, Problems: []string{"normalizer: 5000 records behind"},
		Stages: []*adminv1.StageStatus{{Name: "normalizer", Lag: 5000}},
		LoopClosure: &adminv1.LoopClosure{Detractors: 8, Ticketed: 6, Replied: 5, Solved: 4,
			MedianToTicketSeconds: 1.2, MedianToReplySeconds: 310, MedianToSolvedSeconds: 5400,
			Systems: []*adminv1.LoopClosureSystem{{System: "zendesk", Ticketed: 6, Solved: 4, MedianToSolvedSeconds: 5400}}}}, nil
}

func (fakeAdmin) ListSources(context.Context, *adminv1.ListSourcesRequest) (*adminv1.ListSourcesResponse, error) {
	return &adminv1.ListSourcesResponse{Sources: []*adminv1.Source{
		{Name: "delighted-prod", Provider: "delighted", UrlPrefix: "https://h/v1/hooks/delighted-prod/", StaticTokens: 1},
		{Name: "typeform", Provider: "typeform", UrlPrefix: "https://h/v1/hooks/typeform/"}}}, nil
}

func (fakeAdmin) GetSource(_ context.Context, req *adminv1.GetSourceRequest) (*adminv1.GetSourceResponse, error) {
	return nil, status.Errorf(codes.NotFound, "no source %q", req.Name)
}

func (fakeAdmin) IssueIngestToken(context.Context, *adminv1.IssueIngestTokenRequest) (*adminv1.IssueIngestTokenResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "needs the operator role")
}

func (fakeAdmin) ReplayDeadLetters(_ context.Context, req *adminv1.ReplayDeadLettersRequest) (*adminv1.ReplayDeadLettersResponse, error) {
	if req.Ids[0] == "bad" {
		return nil, status.Error(codes.InvalidArgument, "dead letter id \"bad\" is not <sink>/<partition>/<offset>")
	}
	if req.Ids[0] == "kafka-down" {
		return nil, status.Error(codes.Unavailable, "writing to Kafka: leader not available")
	}
	return &adminv1.ReplayDeadLettersResponse{Replayed: 1, ReplayId: "r1", Skipped: []string{"sink-warehouse/0/9: already replayed"}}, nil
}

func (fakeAdmin) DiscardDeadLetters(context.Context, *adminv1.DiscardDeadLettersRequest) (*adminv1.DiscardDeadLettersResponse, error) {
	return &adminv1.DiscardDeadLettersResponse{}, nil
}

func fakeServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(s, fakeAdmin{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// The documented exit codes, each produced by the answer it stands for.
func TestExitCodes(t *testing.T) {
	addr := fakeServer(t)
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"sources"}, exitOK, "delighted-prod"},
		{[]string{"status"}, exitFailed, "NOT HEALTHY"},
		{[]string{"tokens", "issue", "typeform"}, exitDenied, ""},
		{[]string{"sources", "nosuch"}, exitNotFound, ""},
		{[]string{"dlq", "replay", "sink-warehouse/0/1", "sink-warehouse/0/9"}, exitPartial, "skipped:"},
		{[]string{"dlq", "discard", "sink-warehouse/0/1", "--reason", "x"}, exitNotFound, "discarded 0"},
		{[]string{"dlq", "replay", "bad"}, exitUsage, ""},
		{[]string{"dlq", "replay", "kafka-down"}, exitFailed, ""},
		{[]string{"replay", "ls"}, exitFailed, ""}, // Unimplemented
	} {
		code, out, errOut := runCLI(append(tc.args, "--addr", addr)...)
		if code != tc.code || !strings.Contains(out, tc.out) {
			t.Errorf("%q: exit %d, want %d; stdout %q, stderr %q", tc.args, code, tc.code, out, errOut)
		}
	}
	// A source with tokens from the pipeline file is one row, not two.
	_, out, _ := runCLI("sources", "--addr", addr)
	if n := strings.Count(out, "\ndelighted-prod "); n != 1 {
		t.Errorf("sources lists delighted-prod %d times:\n%s", n, out)
	}
}

// The status shows the loop closure the warehouse reports.
func TestStatusShowsTheLoopClosure(t *testing.T) {
	addr := fakeServer(t)
	_, out, _ := runCLI("status", "--addr", addr)
	for _, want := range []string{"loop closure, last 24h: 8 detractors, 6 (75%) with a ticket, 5 (62%) replied, 4 (50%) solved",
		"median from the detractor: ticket 1s, first reply 5m10s, solved 1h30m0s", "zendesk: 6 tickets, 4 solved, median to solved 1h30m0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// -o json and -o yaml print the message, after the command or before it.
func TestOutputFormats(t *testing.T) {
	addr := fakeServer(t)
	code, out, _ := runCLI("status", "-o", "json", "--addr", addr)
	var js map[string]any
	if err := json.Unmarshal([]byte(out), &js); err != nil || code != exitFailed || js["problems"] == nil {
		t.Fatalf("status -o json: exit %d, %v\n%s", code, err, out)
	}
	code, out, _ = runCLI("-o", "yaml", "sources", "--addr", addr)
	var ys struct {
		Sources []struct {
			Name         string `yaml:"name"`
			StaticTokens int    `yaml:"static_tokens"`
		} `yaml:"sources"`
	}
	if err := yaml.Unmarshal([]byte(out), &ys); err != nil || code != 0 || len(ys.Sources) != 2 || ys.Sources[0].StaticTokens != 1 {
		t.Fatalf("-o yaml sources: exit %d, %v %+v\n%s", code, err, ys, out)
	}
	if strings.Contains(out, "{") {
		t.Errorf("yaml in flow style:\n%s", out)
	}
}
