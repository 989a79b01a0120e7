package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/closedloop/closedloop/tools/internal/delightedgen"
)

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// closedloopctl top, driven in a pseudo-terminal against a running stack
// (ingress, normalizer, enricher, warehouse sink, admin) while webhooks
// arrive: the screen shows the source's webhooks per second, every stage
// with its rate, and the pipeline healthy; q quits and restores the screen.
func TestTopShowsTheRunningStackInATerminal(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	p := pipelineSpec("e2e_top", infra.broker.Addrs, infra.redis.Addr, "ADMIN_GAUGE_INTERVAL=1s")
	p.Run = []string{"sink-warehouse", "enricher", "normalizer", "ingress", "admin"}
	p.AdminTokens = map[string]string{"val": "viewer"}
	startPipeline(t, p)

	cmd := exec.Command(filepath.Join(infra.binDir, "closedloopctl"), "--addr", p.AdminAddr(), "top", "--interval", "500ms")
	cmd.Env = []string{"CLOSEDLOOP_ADMIN_TOKEN=" + p.AdminToken("val"), "TERM=xterm-256color"}
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var mu sync.Mutex
	var screen bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// Webhooks keep arriving while the screen is read.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		gen := delightedgen.New([]byte(p.Secret), 11)
		for ctx.Err() == nil {
			created, _ := gen.Response()
			_, _ = delightedgen.Send(ctx, http.DefaultClient, p.IngressURL, created)
			time.Sleep(50 * time.Millisecond)
		}
	}()

	// The last frame drawn, without its escape codes.
	frame := func() (raw, text string) {
		mu.Lock()
		defer mu.Unlock()
		all := screen.String()
		if i := strings.LastIndex(all, "\x1b[H\x1b[2J"); i >= 0 {
			all = all[i:]
			if j := strings.Index(all[1:], "\x1b[H"); j >= 0 {
				all = all[:j+1]
			}
		}
		return all, ansiRE.ReplaceAllString(all, "")
	}
	rateRE := regexp.MustCompile(`(?m)^delighted\s+([0-9.]+)\s`)
	var raw, text string
	for deadline := time.Now().Add(45 * time.Second); ; {
		raw, text = frame()
		ok := strings.Contains(text, "healthy") && !strings.Contains(text, "UNHEALTHY")
		for _, stage := range []string{"normalizer", "enricher", "sink-warehouse"} {
			ok = ok && regexp.MustCompile(`(?m)^`+stage+`\s+[0-9.]+\s`).MatchString(text)
		}
		if m := rateRE.FindStringSubmatch(text); ok && m != nil {
			if v, _ := strconv.ParseFloat(m[1], 64); v > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the screen never showed the stack healthy with webhooks arriving; last frame:\n%s", text)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !strings.Contains(raw, "\x1b[1m") || !strings.Contains(screen.String(), "\x1b[?1049h") {
		t.Fatalf("not drawn as a terminal screen (no alternate screen or bold title): %q", raw[:min(len(raw), 200)])
	}
	t.Logf("closedloopctl top:\n%s", text)

	// The admin's gauges of the same numbers (the dashboards' lag and
	// dead-letter panels), sampled every ADMIN_GAUGE_INTERVAL.
	for _, series := range []string{`closedloop_pipeline_lag{partition="0",stage="normalizer"}`, `closedloop_dlq_depth{sink="sink-warehouse"}`} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + p.OpsAddrs["admin"] + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if seriesPresent(string(b), series) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the admin's /metrics has no %s", series)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	if _, err := tty.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("top exited with %v after q", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("top did not quit on q")
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	restored := strings.Contains(screen.String(), "\x1b[?1049l")
	mu.Unlock()
	if !restored {
		t.Fatal("top did not leave the alternate screen")
	}
}
