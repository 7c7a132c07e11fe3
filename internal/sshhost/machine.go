package sshhost

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agent"
)

// machine is one SSH machine and its agent session.
type machine struct {
	h *Host
	*endpoint
	jumps []*endpoint // ProxyJump hosts, first to last

	connMu sync.Mutex // serialises connecting
	ctrlMu sync.Mutex // serialises writes on the control channel

	mu        sync.Mutex
	client    *ssh.Client
	ctrl      net.Conn
	ctrlEnc   *json.Encoder
	session   string
	info      agent.Info
	dir       string // the agent's directory there
	machineID string // names the agent's own files in dir
	platform  string // GOOS/GOARCH
	bin       *binary
	up        bool
	lastErr   error
	retryAt   time.Time
	downAt    time.Time // since when the machine cannot be used; zero while up
	retrying  bool
	workers   map[string]*worker
	booked    driver.Resources
	fits      map[string]fitResult
	have      map[string]bool // digests the machine has
}

func (m *machine) state() (agent.Info, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.info, m.up
}

// free is the machine's capacity less what this host's workers booked.
func (m *machine) free(info agent.Info) driver.Resources {
	m.mu.Lock()
	defer m.mu.Unlock()
	return driver.Resources{
		LogicalCPU:  info.Capacity.LogicalCPU - m.booked.LogicalCPU,
		MemoryBytes: info.Capacity.MemoryBytes - m.booked.MemoryBytes,
	}
}

// ensure connects m when it is not connected.
func (m *machine) ensure(ctx context.Context) (agent.Info, error) {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	m.mu.Lock()
	if m.up {
		info := m.info
		m.mu.Unlock()
		return info, nil
	}
	m.mu.Unlock()
	err := m.connect(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastErr = err
	if err != nil {
		if m.downAt.IsZero() {
			m.downAt = time.Now()
		}
		m.retryAt = time.Now().Add(retryDelay(err))
		return agent.Info{}, err
	}
	return m.info, nil
}

// retryDelay is how long to wait before reconnecting after err: problems
// that need a person (keys, host keys, platforms) are retried rarely.
func retryDelay(err error) time.Duration {
	if errors.Is(err, driver.ErrAuth) || errors.Is(err, driver.ErrHostKey) || errors.Is(err, driver.ErrPlatform) {
		return 30 * time.Second
	}
	return time.Second
}

// reconnectLater reconnects a machine that is down, in the background, at
// most once per retry delay.
func (m *machine) reconnectLater() {
	m.mu.Lock()
	if m.up || m.retrying || time.Now().Before(m.retryAt) {
		m.mu.Unlock()
		return
	}
	m.retrying = true
	m.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*m.connectTimeout)
		defer cancel()
		_, err := m.ensure(ctx)
		m.mu.Lock()
		m.retrying = false
		m.mu.Unlock()
		if err == nil {
			m.h.logf(m, m.name+" is back")
		}
	}()
}

// connect logs in, starts the agent when it is not running, and opens
// the session's control channel.
func (m *machine) connect(ctx context.Context) error {
	c, err := m.h.dial(ctx, m)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	dir := m.h.opts.RemoteDir
	if dir == "" {
		dir = `${XDG_CACHE_HOME:-$HOME/.cache}/meadowrun`
	}
	out, err := run(c, `printf '%s\n' "`+dir+`" "$(uname -s)" "$(uname -m)" `+agent.MachineIDWords, nil)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if err != nil || len(lines) != 6 {
		return fmt.Errorf("%w: %s: probing the machine: %v (output %q)", driver.ErrUnreachable, m.name, err, out)
	}
	dir = lines[0]
	// Several machines may share the directory (a home on NFS): the
	// agent's own files are named by the machine.
	id := agent.MachineID(lines[3], lines[4], lines[5])
	platform, err := goPlatform(lines[1], lines[2])
	if err != nil {
		return fmt.Errorf("%w: %s: %w", driver.ErrPlatform, m.name, err)
	}
	bin, err := m.h.bins.get(ctx, platform)
	if err != nil {
		return fmt.Errorf("%w: %s is %s: %w", driver.ErrPlatform, m.name, platform, err)
	}
	sock := agent.SocketName(dir, bin.sha, id)
	conn, err := c.Dial("unix", sock)
	if err != nil {
		// No agent listens: bootstrap one.
		ready, err := m.bootstrap(c, dir, id, bin)
		if err != nil {
			return err
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
			log, _ := run(c, `tail -c 2000 "`+dir+`/`+agent.LogName(id)+`" 2>/dev/null`, nil)
			hint := ""
			if strings.Contains(string(log), "Permission denied") {
				hint = fmt.Sprintf("; %s may be on a file system mounted noexec: give a directory where programs may run (%s)", dir, m.h.opts.setting("RemoteDir", "dir=DIR"))
			}
			return fmt.Errorf("%s: the agent (this program built for %s) did not start: %s; its log says: %s%s",
				m.name, platform, reason, strings.TrimSpace(string(log)), hint)
		}
	}
	session := newSessionID()
	enc := json.NewEncoder(conn)
	br := bufio.NewReader(conn)
	resp, err := exchange(conn, br, agent.Request{Op: agent.OpHello, Version: agent.Version, Session: session})
	if err == nil && resp.Info == nil {
		err = errors.New("no machine description")
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("%w: %s: agent hello: %w", driver.ErrUnreachable, m.name, err)
	}
	if resp.Info.OS+"/"+resp.Info.Arch != platform {
		conn.Close()
		return fmt.Errorf("%w: %s: the agent runs %s/%s, the machine looked like %s", driver.ErrPlatform, m.name, resp.Info.OS, resp.Info.Arch, platform)
	}
	m.mu.Lock()
	m.client, m.ctrl, m.ctrlEnc, m.session = c, conn, enc, session
	m.info, m.dir, m.machineID, m.platform, m.bin = *resp.Info, dir, id, platform, bin
	m.up, m.lastErr, m.downAt = true, nil, time.Time{}
	m.fits = map[string]fitResult{}
	m.have = map[string]bool{bin.sha: true}
	m.mu.Unlock()
	ok = true
	go m.events(c, br)
	go m.keepalive(c)
	return nil
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

func (m *machine) bootstrap(c *ssh.Client, dir, id string, bin *binary) (agentStart, error) {
	exe := dir + "/" + agent.BinDir + "/" + bin.sha
	// The shell lets go of the session's descriptors before starting the
	// agent, except for descriptor 3, a copy of its standard output: the
	// agent writes agent.ReadyLine there once it listens and closes it, or
	// dies, and the session ends either way.
	start := `exec 3>&1 </dev/null >>"` + dir + `/` + agent.LogName(id) + `" 2>&1; cd /; ` +
		agent.EnvAgent + `="` + dir + `" ` + agent.EnvMachine + `=` + id + ` ` + agent.EnvReadyFD + `=3 setsid "` + exe + `" &`
	// One session: the script says whether the machine has the program
	// (touching it keeps the agents' cache sweep from removing it before
	// the agent starts) or how it takes it, reads it from its standard
	// input if need be, and starts the agent.
	script := `umask 077; e="` + exe + `"; ` +
		`if test -x "$e"; then touch "$e"; echo have; else ` +
		`mkdir -p "` + dir + `/` + agent.BinDir + `" || exit 1; t="$e.up$$"; ` +
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
		said <- strings.Contains(string(rest), agent.ReadyLine)
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
			return 0, fmt.Errorf("%w: %s: uploading the %s program to %s: %w", driver.ErrDiskFull, m.name, driver.Bytes(bin.size), dir, err)
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
func sendProgram(w io.Writer, bin *binary, compress bool) error {
	f, err := bin.open()
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

// exchange writes req and reads one response line.
func exchange(w io.Writer, br *bufio.Reader, req agent.Request) (agent.Response, error) {
	b, _ := json.Marshal(req)
	if _, err := w.Write(append(b, '\n')); err != nil {
		return agent.Response{}, err
	}
	line, err := br.ReadBytes('\n')
	if err != nil {
		return agent.Response{}, err
	}
	var resp agent.Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return agent.Response{}, fmt.Errorf("bad agent response: %w", err)
	}
	return resp, nil
}

// respErr turns an agent's error into a classified error naming m.
func (m *machine) respErr(resp agent.Response) error {
	if resp.Error == "" {
		return nil
	}
	var kind error
	switch resp.Kind {
	case agent.KindNoCapacity:
		kind = driver.ErrNoCapacity
	case agent.KindNeverFits:
		kind = driver.ErrNeverFits
	case agent.KindDiskFull:
		kind = driver.ErrDiskFull
	}
	return fmt.Errorf("%s: %w", m.name, &agentError{msg: resp.Error, kind: kind})
}

// agentError is an error the agent reported, classified by kind.
type agentError struct {
	msg  string
	kind error
}

func (e *agentError) Error() string { return e.msg }
func (e *agentError) Unwrap() error { return e.kind }

// request opens a connection to the agent, sends req and reads the
// response. The connection is returned open for what follows.
func (m *machine) request(req agent.Request, body io.Reader) (agent.Response, net.Conn, *bufio.Reader, error) {
	m.mu.Lock()
	c, up, sock := m.client, m.up, ""
	if up {
		sock = agent.SocketName(m.dir, m.bin.sha, m.machineID)
	}
	m.mu.Unlock()
	if !up {
		return agent.Response{}, nil, nil, fmt.Errorf("%w: %s is not connected", driver.ErrUnreachable, m.name)
	}
	conn, err := c.Dial("unix", sock)
	if err != nil {
		err = fmt.Errorf("%w: %s: reaching the agent: %w", driver.ErrUnreachable, m.name, err)
		m.lost(err)
		return agent.Response{}, nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	if body != nil {
		b, _ := json.Marshal(req)
		_, err := conn.Write(append(b, '\n'))
		if err == nil {
			_, err = io.Copy(conn, body)
		}
		if err != nil {
			conn.Close()
			return agent.Response{}, nil, nil, fmt.Errorf("%w: %s: sending to the agent: %w", driver.ErrUnreachable, m.name, err)
		}
		line, err := br.ReadBytes('\n')
		var resp agent.Response
		if err == nil {
			err = json.Unmarshal(line, &resp)
		}
		if err != nil {
			conn.Close()
			return agent.Response{}, nil, nil, fmt.Errorf("%w: %s: agent: %w", driver.ErrUnreachable, m.name, err)
		}
		return resp, conn, br, m.respErr(resp)
	}
	resp, err := exchange(conn, br, req)
	if err != nil {
		conn.Close()
		return agent.Response{}, nil, nil, fmt.Errorf("%w: %s: agent: %w", driver.ErrUnreachable, m.name, err)
	}
	return resp, conn, br, m.respErr(resp)
}

// fit asks the agent how many workers needing r fit (cached).
func (m *machine) fit(ctx context.Context, r driver.Resources) (int, error) {
	key := r.String()
	m.mu.Lock()
	f, ok := m.fits[key]
	m.mu.Unlock()
	if ok {
		return f.n, f.err
	}
	resp, conn, _, err := m.request(agent.Request{Op: agent.OpFit, Resources: &r}, nil)
	if conn != nil {
		conn.Close()
	}
	if err != nil && !errors.Is(err, driver.ErrNeverFits) {
		return 0, err
	}
	m.mu.Lock()
	m.fits[key] = fitResult{resp.Fit, err}
	m.mu.Unlock()
	return resp.Fit, err
}

// ensureContent uploads what the machine lacks of the binary and files.
func (m *machine) ensureContent(bin *binary, files []fileRef) error {
	var want []string
	m.mu.Lock()
	if !m.have[bin.sha] {
		want = append(want, bin.sha)
	}
	for _, f := range files {
		if !m.have[f.SHA] {
			want = append(want, f.SHA)
		}
	}
	m.mu.Unlock()
	if len(want) == 0 {
		return nil
	}
	resp, conn, _, err := m.request(agent.Request{Op: agent.OpHave, SHAs: want}, nil)
	if conn != nil {
		conn.Close()
	}
	if err != nil {
		return err
	}
	for _, sha := range resp.Missing {
		var put agent.Request
		var open func() (io.ReadCloser, error)
		if sha == bin.sha {
			put = agent.Request{Op: agent.OpPut, SHA: sha, Size: bin.size, Mode: 0o700}
			open = bin.open
		} else {
			for _, f := range files {
				if f.SHA == sha {
					put = agent.Request{Op: agent.OpPut, SHA: sha, Size: f.size, Mode: 0o600}
					open = f.open
				}
			}
		}
		if open == nil {
			return fmt.Errorf("%s: the agent asked for unknown content %s", m.name, sha)
		}
		rc, err := open()
		if err != nil {
			return err
		}
		_, conn, _, err := m.request(put, rc)
		rc.Close()
		if conn != nil {
			conn.Close()
		}
		if err != nil {
			return fmt.Errorf("uploading to %w", err)
		}
	}
	m.mu.Lock()
	for _, sha := range want {
		m.have[sha] = true
	}
	m.mu.Unlock()
	return nil
}

// start starts a worker on m.
func (m *machine) start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	m.mu.Lock()
	bin, session := m.bin, m.session
	m.mu.Unlock()
	files, err := m.h.files.refs(spec.Files)
	if err != nil {
		return nil, err
	}
	if err := m.ensureContent(bin, files); err != nil {
		return nil, err
	}
	refs := agentFiles(files)
	remote := spec
	remote.Files = nil
	// Book before asking, so that concurrent starts spread out.
	m.mu.Lock()
	m.booked.LogicalCPU += spec.Resources.LogicalCPU
	m.booked.MemoryBytes += spec.Resources.MemoryBytes
	m.mu.Unlock()
	unbook := func() {
		m.mu.Lock()
		m.booked.LogicalCPU -= spec.Resources.LogicalCPU
		m.booked.MemoryBytes -= spec.Resources.MemoryBytes
		m.mu.Unlock()
	}
	_, conn, br, err := m.request(agent.Request{Op: agent.OpStart, Session: session, Spec: &remote, Binary: bin.sha, Files: refs}, nil)
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		unbook()
		return nil, err
	}
	w := &worker{m: m, name: spec.Name, res: spec.Resources, digest: bin.digest, done: make(chan struct{}), unbook: unbook}
	w.conn = &stream{Conn: conn, r: br, eof: w.streamEnded}
	m.mu.Lock()
	if !m.up || m.session != session {
		m.mu.Unlock()
		w.finish(driver.ExitStatus{Code: -1, Lost: true})
		return w, nil
	}
	m.workers[spec.Name] = w
	m.mu.Unlock()
	return w, nil
}

// events reads the agent's events on the control channel until it
// breaks, which means the machine is lost.
func (m *machine) events(c *ssh.Client, br *bufio.Reader) {
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			m.lostClient(c, fmt.Errorf("%w: %s: connection to the agent lost: %w", driver.ErrUnreachable, m.name, err))
			return
		}
		var ev agent.Event
		if json.Unmarshal(line, &ev) != nil {
			continue
		}
		m.mu.Lock()
		w := m.workers[ev.Worker]
		m.mu.Unlock()
		if w != nil {
			w.exited(ev.Exit)
		}
	}
}

// keepalive drops the connection when the machine stops answering.
func (m *machine) keepalive(c *ssh.Client) {
	t := time.NewTicker(m.keepAlive)
	defer t.Stop()
	for range t.C {
		m.mu.Lock()
		current := m.client == c && m.up
		m.mu.Unlock()
		if !current {
			return
		}
		res := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
			res <- err
		}()
		select {
		case err := <-res:
			if err == nil {
				continue
			}
			m.lostClient(c, fmt.Errorf("%w: %s: %w", driver.ErrUnreachable, m.name, err))
		case <-time.After(time.Duration(m.keepAliveMax) * m.keepAlive):
			m.lostClient(c, fmt.Errorf("%w: %s stopped answering for %v", driver.ErrUnreachable, m.name, time.Duration(m.keepAliveMax)*m.keepAlive))
		}
		return
	}
}

// lost drops the current connection.
func (m *machine) lost(err error) {
	m.mu.Lock()
	c := m.client
	m.mu.Unlock()
	m.lostClient(c, err)
}

// lostClient drops connection c if it is still m's: its workers are
// reported lost.
func (m *machine) lostClient(c *ssh.Client, err error) {
	m.mu.Lock()
	if m.client != c || !m.up {
		m.mu.Unlock()
		return
	}
	m.up = false
	m.lastErr = err
	m.downAt = time.Now()
	m.retryAt = time.Now().Add(retryDelay(err))
	ws := m.workers
	m.workers = map[string]*worker{}
	m.mu.Unlock()
	m.h.mu.Lock()
	closed := m.h.closed
	m.h.mu.Unlock()
	if !closed {
		m.h.logf(m, err.Error()+"; its tasks run elsewhere")
	}
	c.Close()
	for _, w := range ws {
		w.finish(driver.ExitStatus{Code: -1, Lost: true})
	}
}

func (m *machine) close() {
	m.lost(errors.New("closed"))
}

// kill asks the agent to kill a worker.
func (m *machine) kill(w *worker) error {
	m.mu.Lock()
	enc, up := m.ctrlEnc, m.up && m.workers[w.name] == w
	m.mu.Unlock()
	if !up {
		return nil
	}
	// Writes are serialised by their own lock: a write on a dying
	// connection may block until the keepalive gives up, which needs m.mu.
	m.ctrlMu.Lock()
	err := enc.Encode(agent.Request{Op: agent.OpKill, Worker: w.name})
	m.ctrlMu.Unlock()
	if err != nil {
		m.lost(fmt.Errorf("%w: %s: %w", driver.ErrUnreachable, m.name, err))
	}
	return nil
}

// worker is a worker on a machine, seen through its channel.
type worker struct {
	m      *machine
	name   string
	res    driver.Resources
	digest string
	conn   *stream
	unbook func()

	mu       sync.Mutex
	gotExit  bool
	gotEOF   bool
	exit     driver.ExitStatus
	once     sync.Once
	done     chan struct{}
	deadline *time.Timer
}

func (w *worker) Name() string             { return w.name }
func (w *worker) Machine() string          { return w.m.name }
func (w *worker) Conn() io.ReadWriteCloser { return w.conn }
func (w *worker) Done() <-chan struct{}    { return w.done }
func (w *worker) Exit() driver.ExitStatus  { return w.exit }
func (w *worker) Kill() error              { return w.m.kill(w) }

// ExpectedDigest is the build ID of the binary this worker runs.
func (w *worker) ExpectedDigest() string { return w.digest }

// exited records the agent's report. The worker is done once its stream
// has ended too (the agent ends it first), or shortly after.
func (w *worker) exited(st driver.ExitStatus) {
	w.mu.Lock()
	w.gotExit, w.exit = true, st
	eof := w.gotEOF
	if !eof {
		w.deadline = time.AfterFunc(5*time.Second, func() { w.finish(st) })
	}
	w.mu.Unlock()
	if eof {
		w.finish(st)
	}
}

func (w *worker) streamEnded() {
	w.mu.Lock()
	w.gotEOF = true
	st, ok := w.exit, w.gotExit
	w.mu.Unlock()
	if ok {
		w.finish(st)
	}
}

func (w *worker) finish(st driver.ExitStatus) {
	w.once.Do(func() {
		w.mu.Lock()
		w.exit = st
		if w.deadline != nil {
			w.deadline.Stop()
		}
		w.mu.Unlock()
		if st.Lost {
			// The stream may hang on a dead connection: end it so that the
			// coordinator's reader returns.
			w.conn.Close()
		}
		w.m.mu.Lock()
		if w.m.workers[w.name] == w {
			delete(w.m.workers, w.name)
		}
		w.m.mu.Unlock()
		w.unbook()
		close(w.done)
	})
}

// stream is a worker's channel; its end is noted.
type stream struct {
	net.Conn
	r   *bufio.Reader
	eof func()
}

func (s *stream) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil {
		s.eof()
	}
	return n, err
}
