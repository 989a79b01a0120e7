// Package localinfra starts the real infrastructure processes closedloop's
// development stack and tests use on one machine: redis-server and
// PostgreSQL (initdb + postgres in a temporary directory, as a non-root user
// when the caller is root, as PostgreSQL requires). Each process listens on
// loopback on a free port and is stopped by Stop.
package localinfra

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled is returned when the server binary cannot be found.
var ErrNotInstalled = errors.New("not installed")

// Proc is a running server process.
type Proc struct {
	Name string
	Addr string // host:port on loopback
	Dir  string
	// removeDir makes Stop delete Dir.
	removeDir bool
	cmd       *exec.Cmd
	done      chan struct{}
	log       *os.File
}

// Stop terminates the process (SIGTERM, then SIGKILL after 10 s) and waits.
func (p *Proc) Stop() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	if p.log != nil {
		_ = p.log.Close()
	}
	if p.removeDir {
		_ = os.RemoveAll(p.Dir)
	}
}

// LogTail returns the last lines of the process's log, for error messages.
func (p *Proc) LogTail() string { return tail(filepath.Join(p.Dir, p.Name+".log"), 20) }

// handedOut holds every port FreePort has returned in this process.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that it has not returned before in this process. The kernel may give a
// port that was just free to the next caller too, before the first one's
// process binds it: with pipelines started in parallel (the end-to-end
// tests) two services were handed one port ("address already in use").
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	var held []net.Listener // ports handed out before, kept bound so the kernel picks another
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if handedOut.ports[port] {
			held = append(held, l)
			continue
		}
		_ = l.Close()
		handedOut.ports[port] = true
		return port, nil
	}
	return 0, errors.New("no TCP port on 127.0.0.1 that was not handed out before, in 100 tries")
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StartRedis starts redis-server without persistence on a free port, its
// files in dir. It returns ErrNotInstalled when redis-server is not on PATH.
func StartRedis(ctx context.Context, dir string) (*Proc, error) {
	return StartRedisOn(ctx, dir, 0)
}

// StartRedisOn is StartRedis on a given port (0: a free one), so that a test
// can stop Redis and start it again where its clients expect it.
func StartRedisOn(ctx context.Context, dir string, port int) (*Proc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server: %w (Debian: apt-get install redis-server)", ErrNotInstalled)
	}
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	p := &Proc{Name: "redis", Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: dir}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "yes", "--logfile", ""}
	if err := p.start(bin, args, nil); err != nil {
		return nil, err
	}
	if err := WaitTCP(ctx, p.Addr, 10*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("redis-server did not start: %w\n%s", err, p.LogTail())
	}
	return p, nil
}

// Postgres is a running PostgreSQL server.
type Postgres struct {
	*Proc
	// URL connects as the superuser "closedloop" to database "postgres".
	URL string
}

// PostgresBinDir finds the directory with initdb and postgres: on PATH, or
// the newest /usr/lib/postgresql/<version>/bin (Debian's layout).
func PostgresBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			// Follow a symlink (e.g. /usr/local/bin/initdb) to the real
			// bin directory, where pg_isready lives too.
			if real, err := filepath.EvalSymlinks(p); err == nil {
				p = real
			}
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server (initdb, postgres): %w (Debian: apt-get install postgresql)", ErrNotInstalled)
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// StartPostgres initialises a cluster in a new temporary directory (under
// the system temp dir, which the unprivileged user can reach) and starts
// postgres on a free loopback port with settings for throwaway data (no
// fsync). When the caller is root it runs both as the "postgres" user (else
// "nobody"). Stop removes the directory.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	binDir, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := dropRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "closedloop-pg-")
	if err != nil {
		return nil, err
	}
	pg, err := startPostgres(ctx, binDir, dir, cred)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	pg.removeDir = true
	return pg, nil
}

func startPostgres(ctx context.Context, binDir, dir string, cred *syscall.Credential) (*Postgres, error) {
	data := filepath.Join(dir, "pgdata")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	if cred != nil {
		for _, d := range []string{dir, data} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, fmt.Errorf("chown %s for PostgreSQL: %w", d, err)
			}
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), "-D", data, "-U", "closedloop", "--auth=trust",
		"--no-sync", "--encoding=UTF8", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	p := &Proc{Name: "postgres", Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: dir}
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-h", "127.0.0.1", "-k", dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"}
	if err := p.start(filepath.Join(binDir, "postgres"), args, cred); err != nil {
		return nil, err
	}
	if err := WaitTCP(ctx, p.Addr, 30*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("postgres did not start: %w\n%s", err, p.LogTail())
	}
	// An open port is not a ready server: during start-up postgres accepts
	// the TCP connection and answers "the database system is starting up".
	if err := waitPostgresReady(ctx, binDir, p, port, 30*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return &Postgres{Proc: p, URL: fmt.Sprintf("postgres://closedloop@%s/postgres?sslmode=disable", p.Addr)}, nil
}

// waitPostgresReady polls pg_isready until the server accepts sessions
// (exit 0); 1 means "rejecting connections" (still starting up).
func waitPostgresReady(ctx context.Context, binDir string, p *Proc, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "pg_isready"), "-h", "127.0.0.1",
			"-p", strconv.Itoa(port), "-U", "closedloop", "-d", "postgres", "-t", "2")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return fmt.Errorf("postgres readiness check: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %s: %v %s\n%s", timeout, err, out, p.LogTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("postgres exited during start-up\n%s", p.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func dropRoot() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root and neither a postgres nor a nobody user exists to run PostgreSQL as")
}

func (p *Proc) start(bin string, args []string, cred *syscall.Credential) error {
	logf, err := os.Create(filepath.Join(p.Dir, p.Name+".log"))
	if err != nil {
		return err
	}
	if cred != nil {
		_ = logf.Chown(int(cred.Uid), int(cred.Gid))
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C in the terminal reaches the parent, which
	// then stops the children in order instead of all dying at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.log, p.done = cmd, logf, make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.done) }()
	return nil
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// PID is the server's process id (0 when it is not running).
func (p *Proc) PID() int {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}
