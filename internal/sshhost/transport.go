package sshhost

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/tracepoint"
)

// machine is one SSH machine: the agent client's transport to it.
type machine struct {
	h *Host
	*endpoint
	jumps []*endpoint // ProxyJump hosts, first to last
}

// Open implements agentclient.Transport: it logs in, through the jump
// hosts if any.
func (m *machine) Open(ctx context.Context) (agentclient.Link, error) {
	c, err := m.h.dial(ctx, m)
	if err != nil {
		return nil, err
	}
	return &link{m: m, c: c}, nil
}

// link is one SSH connection to a machine; every stream to the agent is
// a channel on it (direct-streamlocal@openssh.com), so no port is opened.
type link struct {
	m *machine
	c *ssh.Client

	mu    sync.Mutex
	sock  string   // the agent's socket, once bootstrapped
	first net.Conn // the stream Bootstrap opened, handed out by Dial first
}

// Dial implements agentclient.Link.
func (l *link) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	l.mu.Lock()
	first, sock := l.first, l.sock
	l.first = nil
	l.mu.Unlock()
	if first != nil {
		return first, nil
	}
	return l.c.Dial("unix", sock)
}

// KeepAlive implements agentclient.Link with OpenSSH's keepalive request.
func (l *link) KeepAlive() error {
	_, _, err := l.c.SendRequest("keepalive@openssh.com", true, nil)
	return err
}

// Close implements agentclient.Link.
func (l *link) Close() error {
	l.mu.Lock()
	if l.first != nil {
		l.first.Close()
		l.first = nil
	}
	l.mu.Unlock()
	return l.c.Close()
}

// Bootstrap implements agentclient.Link: one exec session probes the
// agent directory, the platform and the machine id; when no agent of the
// program for that platform listens, one more uploads the program if the
// machine lacks it and starts it.
func (l *link) Bootstrap(ctx context.Context, programs *agentclient.Programs) (*agentclient.Program, error) {
	m, c := l.m, l.c
	dir := m.h.opts.RemoteDir
	if dir == "" {
		dir = `${XDG_CACHE_HOME:-$HOME/.cache}/meadowrun`
	}
	// A machine probed before (by this process or another) whose agent
	// still listens is reached without probing it again: one session
	// less for a new client on a warm machine.
	pkey := agentProbeKey(m.name, dir)
	if lines := loadProbe(pkey); lines != nil {
		if bin, sock, err := agentSocket(ctx, programs, lines); err == nil {
			tracepoint.Mark("sshhost: Bootstrap: probe cached, program ready")
			if conn, err := c.Dial("unix", sock); err == nil {
				tracepoint.Mark("sshhost: Bootstrap: agent socket dialled")
				l.mu.Lock()
				l.sock, l.first = sock, conn
				l.mu.Unlock()
				return bin, nil
			}
		}
	}
	tracepoint.Mark("sshhost: Bootstrap: probing")
	out, err := run(c, `printf '%s\n' "`+dir+`" "$(uname -s)" "$(uname -m)" `+agentproto.MachineIDWords, nil)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if err != nil || len(lines) != 6 {
		return nil, fmt.Errorf("%w: %s: probing the machine: %v (output %q)", driver.ErrUnreachable, m.name, err, out)
	}
	storeProbe(pkey, lines)
	dir = lines[0]
	// Several machines may share the directory (a home on NFS): the
	// agent's own files are named by the machine.
	id := agentproto.MachineID(lines[3], lines[4], lines[5])
	platform, err := agentclient.GoPlatform(lines[1], lines[2])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", driver.ErrPlatform, m.name, err)
	}
	bin, err := programs.For(ctx, platform)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is %s: %w", driver.ErrPlatform, m.name, platform, err)
	}
	sock := agentproto.SocketName(dir, bin.SHA, id)
	conn, err := c.Dial("unix", sock)
	if err != nil {
		// No agent listens: bootstrap one.
		ready, err := m.bootstrap(c, dir, id, bin)
		if err != nil {
			return nil, err
		}
		// An agent that said it listens is reached at once (or, when it
		// found another agent starting, once that one listens); one that
		// said nothing (a program of an older meadowrun) is waited for.
		wait := 10 * time.Second
		if ready == agentReady {
			wait = 5 * time.Second
		}
		reason := "it exited as it started"
		if ready == agentDied {
			err = errors.New(reason)
		} else if conn, err = dialRetry(ctx, c, sock, wait); err != nil {
			reason = fmt.Sprintf("nothing listens on its socket (%v)", err)
		}
		if err != nil {
			log, _ := run(c, `tail -c 2000 "`+dir+`/`+agentproto.LogName(id)+`" 2>/dev/null`, nil)
			hint := ""
			if strings.Contains(string(log), "Permission denied") {
				hint = fmt.Sprintf("; %s may be on a file system mounted noexec: give a directory where programs may run (%s)", dir, m.h.opts.setting("RemoteDir", "dir=DIR"))
			}
			return nil, fmt.Errorf("%s: the agent (this program built for %s) did not start: %s; its log says: %s%s",
				m.name, platform, reason, strings.TrimSpace(string(log)), hint)
		}
	}
	l.mu.Lock()
	l.sock, l.first = sock, conn
	l.mu.Unlock()
	return bin, nil
}

// bootstrap uploads bin when the machine lacks it and starts the agent,
// in one session. The upload is compressed when the machine has gzip:
// sshd's receiving side is what limits an upload, so fewer bytes are
// faster (Go programs shrink to about half).
// agentStart is what a bootstrap learnt of the agent it started.
type agentStart int

const (
	agentReady   agentStart = iota // it said it listens
	agentDied                      // it exited without saying so
	agentUnknown                   // it said nothing in time
)

// agentStartWait bounds how long a bootstrap waits for the agent to say
// whether it came up.
const agentStartWait = 10 * time.Second

func (m *machine) bootstrap(c *ssh.Client, dir, id string, bin *agentclient.Program) (agentStart, error) {
	exe := dir + "/" + agentproto.BinDir + "/" + bin.SHA
	// The shell lets go of the session's descriptors before starting the
	// agent, except for descriptor 3, a copy of its standard output: the
	// agent writes agentproto.ReadyLine there once it listens and closes it, or
	// dies, and the session ends either way.
	start := `exec 3>&1 </dev/null >>"` + dir + `/` + agentproto.LogName(id) + `" 2>&1; cd /; ` +
		agentEnv(m.h.opts) +
		agentproto.EnvAgent + `="` + dir + `" ` + agentproto.EnvMachine + `=` + id + ` ` + agentproto.EnvReadyFD + `=3 setsid "` + exe + `" &`
	// One session: the script says whether the machine has the program
	// (touching it keeps the agents' cache sweep from removing it before
	// the agent starts) or how it takes it, reads it from its standard
	// input if need be, and starts the agent.
	script := `umask 077; e="` + exe + `"; ` +
		`if test -x "$e"; then touch "$e"; echo have; else ` +
		`mkdir -p "` + dir + `/` + agentproto.BinDir + `" || exit 1; t="$e.up$$"; ` +
		`if command -v gzip >/dev/null; then echo gzip; gzip -dc > "$t"; else echo plain; cat > "$t"; fi && ` +
		`chmod 700 "$t" && mv -f "$t" "$e" || { rm -f "$t"; exit 1; }; fi; ` + start
	s, err := c.NewSession()
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", driver.ErrUnreachable, m.name, err)
	}
	defer s.Close()
	stdin, err := s.StdinPipe()
	if err != nil {
		return 0, err
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var errb bytes.Buffer
	s.Stderr = &errb
	if err := s.Start(shellCommand(script)); err != nil {
		return 0, fmt.Errorf("%w: %s: %w", driver.ErrUnreachable, m.name, err)
	}
	br := bufio.NewReader(stdout)
	how, _ := br.ReadString('\n')
	said := make(chan bool, 1)
	go func() {
		rest, _ := io.ReadAll(br)
		said <- strings.Contains(string(rest), agentproto.ReadyLine)
	}()
	var sendErr error
	switch strings.TrimSpace(how) {
	case "gzip", "plain":
		sendErr = sendProgram(stdin, bin, strings.TrimSpace(how) == "gzip")
	}
	stdin.Close()
	waited := make(chan error, 1)
	go func() { waited <- s.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(agentStartWait):
		return agentUnknown, nil
	}
	if err == nil && sendErr != nil {
		err = sendErr
	}
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
		if strings.Contains(err.Error(), "No space left") || strings.Contains(err.Error(), "Disk quota") {
			return 0, fmt.Errorf("%w: %s: uploading the %s program to %s: %w", driver.ErrDiskFull, m.name, driver.Bytes(bin.Size), dir, err)
		}
		return 0, fmt.Errorf("%s: uploading the program to %s and starting it: %w", m.name, dir, err)
	}
	select {
	case ok := <-said:
		if ok {
			return agentReady, nil
		}
		return agentDied, nil
	case <-time.After(time.Second):
		return agentUnknown, nil
	}
}

// sendProgram writes bin to w, gzip-compressed when compress is set; the
// compression runs ahead of the writes, in a goroutine of its own.
func sendProgram(w io.Writer, bin *agentclient.Program, compress bool) error {
	f, err := bin.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	if !compress {
		_, err := io.Copy(w, f)
		return err
	}
	pr, pw := io.Pipe()
	defer pr.Close()
	go func() {
		// The compressor writes a few hundred bytes at a time; one SSH
		// packet each would keep sshd busy moving its buffers.
		bw := bufio.NewWriterSize(pw, 256<<10)
		zw, _ := gzip.NewWriterLevel(bw, gzip.BestSpeed)
		_, err := io.Copy(zw, f)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
		pw.CloseWithError(err)
	}()
	_, err = io.Copy(w, pr)
	return err
}

func dialRetry(ctx context.Context, c *ssh.Client, sock string, limit time.Duration) (net.Conn, error) {
	end := time.Now().Add(limit)
	delay := 2 * time.Millisecond
	for {
		conn, err := c.Dial("unix", sock)
		if err == nil || time.Now().After(end) {
			return conn, err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// agentEnv is the shell assignments of the agent's container settings,
// "" to keep the machine's own.
func agentEnv(o Options) string {
	quote := func(v string) string { return "'" + strings.ReplaceAll(v, "'", `'\''`) + "' " }
	env := ""
	if o.DockerHost != "" {
		env += "DOCKER_HOST=" + quote(o.DockerHost)
	}
	if len(o.ContainerMounts) > 0 {
		env += agentproto.EnvContainerMounts + "=" + quote(strings.Join(o.ContainerMounts, ","))
	}
	for _, k := range slices.Sorted(maps.Keys(o.AgentEnv)) {
		env += k + "=" + quote(o.AgentEnv[k])
	}
	return env
}
