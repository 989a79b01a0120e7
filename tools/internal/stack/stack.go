// Package stack starts closedloop the way it runs in production, on one
// machine: the dev broker, Redis and PostgreSQL as real processes, and every
// service binary as its own process with its own consumer group. `make run`
// (tools/devstack) and the end-to-end tests (tools/e2e) both use it.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/closedloop/closedloop/libs/localinfra"
)

// Binaries are the commands Build compiles, by name.
var Binaries = map[string]string{
	"devbroker":      "./tools/devbroker",
	"ingress":        "./services/ingress/cmd/ingress",
	"normalizer":     "./services/normalizer/cmd/normalizer",
	"enricher":       "./services/enricher/cmd/enricher",
	"sink-warehouse": "./services/sink-warehouse/cmd/sink-warehouse",
	"sink-console":   "./services/sink-console/cmd/sink-console",
	"sink-webhook":   "./services/sink-webhook/cmd/sink-webhook",
	"crmserver":      "./tools/crmserver",
	"admin":          "./services/admin/cmd/admin",
	"closedloopctl":  "./services/admin/cmd/closedloopctl",
}

// ImageEnv is the environment the service image sets (deploy/docker/Dockerfile's
// ENV lines; TestImageEnvIsTheDockerfiles keeps the two the same). Every
// service process started here gets it before its own Env, so benchmarks and
// end-to-end tests run the services as they are deployed.
//
// GODEBUG=schedtrace at its largest period (24.8 days) keeps Go's sysmon
// thread from its deep sleep: otherwise every system call after an idle
// moment wakes it, and it polls from every 20 µs until the process idles
// again. On the two-core benchmark host that cost the four services about a
// quarter of their CPU per event at 1,000 events/s (docs/benchmarks.md,
// fourteenth pass); with it sysmon keeps polling, every 10 ms once the
// process is idle. The setting also writes a one-line scheduler summary to
// standard error once the host has been up 24.8 days (at start, on a host
// up longer) and every 24.8 days after, and a scheduler dump with a fatal
// error.
var ImageEnv = []string{"GODEBUG=schedtrace=2147483647"}

// isService reports whether bin is one of the services (a binary built
// from ./services/…, whatever the process is called).
func isService(bin string) bool {
	return strings.HasPrefix(Binaries[filepath.Base(bin)], "./services/")
}

// RepoRoot finds the directory holding go.work above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.work not found above the working directory: run from the closedloop checkout")
		}
		dir = parent
	}
}

// Build compiles every binary into binDir (one `go build` so the build cache
// and the workspace are shared).
func Build(ctx context.Context, root, binDir string) error {
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-o", binDir + string(os.PathSeparator)}
	for _, pkg := range Binaries {
		args = append(args, pkg)
	}
	// Every vendor fake's server (tools/fakes/<kind>/cmd/<kind>server).
	args = append(args, "./tools/fakes/...")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// Process is a started binary.
type Process struct {
	Name string
	Bin  string
	Args []string
	Env  []string
	// Baseline gives a process that is not a service the services'
	// ImageEnv too: a reference a service is compared with (a passthrough, a
	// naive receiver) runs on the same runtime settings, so the ratio
	// compares the code.
	Baseline bool
	Log      string // path of its combined output
	// Tee, when set, also receives the output.
	Tee io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs the process in its own process group (so a terminal's Ctrl-C
// reaches only the parent, which stops children in order).
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Env = os.Environ()
	if p.Baseline || isService(p.Bin) {
		cmd.Env = append(cmd.Env, ImageEnv...)
	}
	cmd.Env = append(cmd.Env, p.Env...)
	var out io.Writer = f
	if p.Tee != nil {
		out = io.MultiWriter(f, p.Tee)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the process has not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Signal sends sig and, for SIGKILL or when wait is set, waits for the exit.
func (p *Process) Signal(sig syscall.Signal, wait time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	if wait <= 0 {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not exit within %s of %s; killed", p.Name, wait, sig)
	}
}

// Kill sends SIGKILL and waits: a crash, with no chance to flush or commit.
func (p *Process) Kill() { _ = p.Signal(syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM and waits up to 30 s for a graceful exit.
func (p *Process) Stop() error { return p.Signal(syscall.SIGTERM, 30*time.Second) }

// ExitErr is the process's exit error once it has exited.
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Broker is a running devbroker.
type Broker struct {
	*Process
	Addrs string
}

// StartBroker starts a single devbroker with topics seeded, its data in
// dir, on port (0: a free one).
func StartBroker(ctx context.Context, binDir, dir string, port, partitions int, topics []string) (*Broker, error) {
	return StartSecureBroker(ctx, binDir, dir, port, partitions, topics, BrokerSecurity{})
}

// BrokerSecurity secures a devbroker as a production cluster is: TLS
// listeners (CertFile, KeyFile), SASL with a superuser
// ("MECHANISM:USER:PASSWORD"), users with ACLs (UsersFile, the devbroker's
// -users JSON) and ACL checking.
type BrokerSecurity struct {
	CertFile, KeyFile string
	Superuser         string
	UsersFile         string
	ACLs              bool
}

// StartSecureBroker is StartBroker with security.
func StartSecureBroker(ctx context.Context, binDir, dir string, port, partitions int, topics []string, sec BrokerSecurity) (*Broker, error) {
	addrFile := filepath.Join(dir, "broker.addrs")
	_ = os.Remove(addrFile)
	args := []string{"-brokers", "1", "-partitions", strconv.Itoa(partitions), "-data-dir", filepath.Join(dir, "kafka"), "-addr-file", addrFile}
	if sec.CertFile != "" {
		args = append(args, "-tls-cert", sec.CertFile, "-tls-key", sec.KeyFile)
	}
	if sec.Superuser != "" {
		args = append(args, "-sasl-superuser", sec.Superuser)
	}
	if sec.UsersFile != "" {
		args = append(args, "-users", sec.UsersFile)
	}
	if sec.ACLs {
		args = append(args, "-acls")
	}
	if port != 0 {
		args = append(args, "-ports", strconv.Itoa(port))
	}
	if len(topics) > 0 {
		args = append(args, "-topics", strings.Join(topics, ","))
	}
	p := &Process{Name: "devbroker", Bin: filepath.Join(binDir, "devbroker"), Log: filepath.Join(dir, "devbroker.log"), Args: args}
	if err := p.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil {
			addrs := strings.TrimSpace(string(b))
			for _, a := range strings.Split(addrs, ",") {
				if err := localinfra.WaitTCP(ctx, a, 10*time.Second); err != nil {
					p.Kill()
					return nil, err
				}
			}
			return &Broker{Process: p, Addrs: addrs}, nil
		}
		if !p.Running() || time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("devbroker did not start:\n%s", p.Tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitReady polls http://addr/readyz until it answers 200 or p exits.
func WaitReady(ctx context.Context, p *Process, opsAddr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + opsAddr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.Running() {
			return fmt.Errorf("%s exited during start-up: %v\n%s", p.Name, p.ExitErr(), p.Tail(30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s\n%s", p.Name, timeout, p.Tail(30))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PID is the process id, or 0 when not started.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// StartCRM starts tools/crmserver on a free loopback port with args (e.g.
// "-latency", "20ms") and returns it with its base URL once it answers.
func StartCRM(ctx context.Context, binDir, dir string, args ...string) (*Process, string, error) {
	port, err := localinfra.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := &Process{Name: "crmserver", Bin: filepath.Join(binDir, "crmserver"), Args: append([]string{"-addr", addr}, args...),
		Log: filepath.Join(dir, "crmserver.log")}
	if err := p.Start(); err != nil {
		return nil, "", err
	}
	if err := WaitReady(ctx, p, addr, 30*time.Second); err != nil {
		p.Kill()
		return nil, "", err
	}
	return p, "http://" + addr, nil
}

// ApplyTopics runs `admin topics apply` (the admin binary in binDir)
// against brokers with env (CLOSEDLOOP_TOPIC_PREFIX, KAFKA_TLS_*,
// KAFKA_SASL_*, ...) and returns its output.
func ApplyTopics(ctx context.Context, binDir, brokers string, env ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "admin"), "topics", "apply")
	cmd.Env = append([]string{"KAFKA_BROKERS=" + brokers}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("admin topics apply: %w\n%s", err, out)
	}
	return string(out), nil
}
