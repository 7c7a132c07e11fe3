package agentclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/tracepoint"
)

// machine is one machine and its agent session.
type machine struct {
	h              *Host
	t              Transport
	name           string
	connectTimeout time.Duration
	keepAlive      time.Duration
	keepAliveMax   int

	connMu sync.Mutex // serialises connecting
	ctrlMu sync.Mutex // serialises writes on the control channel

	mu       sync.Mutex
	client   Link
	ctrl     io.ReadWriteCloser
	session  string
	info     agentproto.Machine
	bin      *Program
	up       bool
	lastErr  error
	retryAt  time.Time
	downAt   time.Time // since when the machine cannot be used; zero while up
	retrying bool
	workers  map[string]*worker
	booked   driver.Resources
	fits     map[string]fitResult
	have     map[string]bool // digests the machine has
}

func (m *machine) state() (agentproto.Machine, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.info, m.up
}

// free is the machine's capacity less what this host's workers booked.
func (m *machine) free(info agentproto.Machine) driver.Resources {
	m.mu.Lock()
	defer m.mu.Unlock()
	return driver.Resources{
		LogicalCPU:  info.Capacity.LogicalCPU - m.booked.LogicalCPU,
		MemoryBytes: info.Capacity.MemoryBytes - m.booked.MemoryBytes,
	}
}

// ensure connects m when it is not connected.
func (m *machine) ensure(ctx context.Context) (agentproto.Machine, error) {
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
		return agentproto.Machine{}, err
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

// connect connects the machine through its transport, has the agent
// started when it is not running, and opens the session's control
// channel.
func (m *machine) connect(ctx context.Context) error {
	// An agent that is exiting for being idle refuses the session: the
	// next bootstrap, once it has gone, starts a new one.
	for try := 0; ; try++ {
		err := m.connectOnce(ctx)
		if !errors.Is(err, errAgentStopping) || try == 5 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond << try):
		}
	}
}

// errAgentStopping is an agent's refusal of a session as it exits.
var errAgentStopping = errors.New("the agent is exiting after its idle timeout")

func (m *machine) connectOnce(ctx context.Context) error {
	c, err := m.t.Open(ctx)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	tracepoint.Mark("agentclient: connect: link open")
	bin, err := c.Bootstrap(ctx, m.h.bins)
	if err != nil {
		return err
	}
	tracepoint.Mark("agentclient: connect: bootstrapped")
	platform := bin.Platform
	conn, err := c.Dial(ctx)
	if err != nil {
		return fmt.Errorf("%w: %s: reaching the agent: %w", driver.ErrUnreachable, m.name, err)
	}
	session := newSessionID()
	br := bufio.NewReader(conn)
	var resp agentproto.HelloResponse
	err = exchange(conn, br, agentproto.Hello{Version: agentproto.Version, Session: session}, &resp)
	if err == nil && resp.Failed() {
		err = errors.New(resp.Error)
		if resp.Kind == agentproto.KindStopping {
			err = fmt.Errorf("%w (%s)", errAgentStopping, resp.Error)
		}
	}
	if err == nil && resp.Machine == nil {
		err = errors.New("no machine description")
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("%w: %s: agent hello: %w", driver.ErrUnreachable, m.name, err)
	}
	if resp.Machine.OS+"/"+resp.Machine.Arch != platform {
		conn.Close()
		return fmt.Errorf("%w: %s: the agent runs %s/%s, the machine looked like %s", driver.ErrPlatform, m.name, resp.Machine.OS, resp.Machine.Arch, platform)
	}
	tracepoint.Mark("agentclient: connect: hello answered")
	m.mu.Lock()
	m.client, m.ctrl, m.session = c, conn, session
	m.info, m.bin = *resp.Machine, bin
	m.up, m.lastErr, m.downAt = true, nil, time.Time{}
	m.fits = map[string]fitResult{}
	m.have = map[string]bool{bin.SHA: true}
	m.mu.Unlock()
	ok = true
	go m.events(c, br)
	go m.keepalive(c)
	return nil
}

// exchange writes req and reads one response line into resp.
func exchange(w io.Writer, br *bufio.Reader, req agentproto.Request, resp any) error {
	if err := agentproto.WriteRequest(w, req); err != nil {
		return err
	}
	return agentproto.ReadMessage(br, resp)
}

// respErr turns an agent's error into a classified error naming m.
func (m *machine) respErr(resp agentproto.Response) error {
	if resp.Error == "" {
		return nil
	}
	var kind error
	switch resp.Kind {
	case agentproto.KindNoCapacity:
		kind = driver.ErrNoCapacity
	case agentproto.KindNeverFits:
		kind = driver.ErrNeverFits
	case agentproto.KindDiskFull:
		kind = driver.ErrDiskFull
	case agentproto.KindUnsupported:
		kind = driver.ErrUnsupported
	case agentproto.KindImageNotFound:
		kind = driver.ErrImageNotFound
	case agentproto.KindRegistryAuth:
		kind = driver.ErrRegistryAuth
	case agentproto.KindSidecarExited:
		kind = driver.ErrSidecarExited
	case agentproto.KindEnvironment:
		kind = driver.ErrEnvironment
	// A machine whose port is taken or that has no engine cannot run the
	// worker; another may.
	case agentproto.KindPortInUse:
		kind = errors.Join(driver.ErrPortInUse, driver.ErrUnsupported)
	case agentproto.KindNoEngine:
		kind = errors.Join(driver.ErrNoEngine, driver.ErrUnsupported)
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

// request opens a connection to the agent, sends req (and then body, if
// any) and reads the response into resp, a pointer to a response that
// embeds agentproto.Response. The connection is returned open for what
// follows.
func (m *machine) request(req agentproto.Request, body io.Reader, resp response) (io.ReadWriteCloser, *bufio.Reader, error) {
	m.mu.Lock()
	c, up := m.client, m.up
	m.mu.Unlock()
	if !up {
		return nil, nil, fmt.Errorf("%w: %s is not connected", driver.ErrUnreachable, m.name)
	}
	conn, err := c.Dial(context.Background())
	if err != nil {
		err = fmt.Errorf("%w: %s: reaching the agent: %w", driver.ErrUnreachable, m.name, err)
		m.lost(err)
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	if body != nil {
		err := agentproto.WriteRequest(conn, req)
		if err == nil {
			_, err = io.Copy(conn, body)
		}
		if err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("%w: %s: sending to the agent: %w", driver.ErrUnreachable, m.name, err)
		}
		if err := agentproto.ReadMessage(br, resp); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("%w: %s: agent: %w", driver.ErrUnreachable, m.name, err)
		}
		return conn, br, m.respErr(resp.Status())
	}
	if err := exchange(conn, br, req, resp); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("%w: %s: agent: %w", driver.ErrUnreachable, m.name, err)
	}
	return conn, br, m.respErr(resp.Status())
}

// response is a pointer to a response line.
type response interface{ Status() agentproto.Response }

// fit asks the agent how many workers needing r fit (cached).
func (m *machine) fit(ctx context.Context, r driver.Resources) (int, error) {
	key := r.String()
	m.mu.Lock()
	f, ok := m.fits[key]
	m.mu.Unlock()
	if ok {
		return f.n, f.err
	}
	var resp agentproto.FitResponse
	conn, _, err := m.request(agentproto.Fit{Resources: agentproto.ResourcesOf(r)}, nil, &resp)
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
func (m *machine) ensureContent(bin *Program, files []fileRef) error {
	var want []string
	m.mu.Lock()
	if !m.have[bin.SHA] {
		want = append(want, bin.SHA)
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
	var resp agentproto.HaveResponse
	conn, _, err := m.request(agentproto.Have{SHAs: want}, nil, &resp)
	if conn != nil {
		conn.Close()
	}
	if err != nil {
		return err
	}
	for _, sha := range resp.Missing {
		var put agentproto.Put
		var open func() (io.ReadCloser, error)
		var path string
		if sha == bin.SHA {
			put = agentproto.Put{SHA: sha, Size: bin.Size, Mode: 0o700}
			open, path = bin.Open, bin.Path
		} else {
			for _, f := range files {
				if f.SHA == sha {
					put = agentproto.Put{SHA: sha, Size: f.size, Mode: 0o600}
					open, path = f.open, f.local
				}
			}
		}
		if open == nil {
			return fmt.Errorf("%s: the agent asked for unknown content %s", m.name, sha)
		}
		if m.downloaded(put, path) {
			continue
		}
		rc, err := open()
		if err != nil {
			return err
		}
		conn, _, err := m.request(put, rc, &agentproto.Response{})
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

// downloaded has the agent download put's content from the host's
// ContentStore, and says whether it did; when not, the reason was logged
// and the content goes over the connection.
func (m *machine) downloaded(put agentproto.Put, path string) bool {
	cs := m.h.opts.Content
	if cs == nil {
		return false
	}
	d, ok := cs.Download(context.Background(), put.SHA, put.Size, path)
	if !ok {
		return false
	}
	put.URL, put.Header = d.URL, d.Header
	conn, _, err := m.request(put, nil, &agentproto.Response{})
	if conn != nil {
		conn.Close()
	}
	if err != nil {
		m.h.logf(m, fmt.Sprintf("%s could not download content %s (%s): %v; sending it", m.name, put.SHA[:12], driver.Bytes(put.Size), err))
		return false
	}
	return true
}

// start starts a worker on m.
func (m *machine) start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	m.mu.Lock()
	bin, session := m.bin, m.session
	m.mu.Unlock()
	files, err := m.h.files.refs("", spec.Files)
	if err != nil {
		return nil, err
	}
	if err := m.ensureContent(bin, files); err != nil {
		return nil, err
	}
	tracepoint.Mark("agentclient: start: content there")
	refs := agentFiles(files)
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
	start := agentproto.Start{Session: session, Worker: agentproto.WorkerSpecOf(spec), Binary: bin.SHA, Files: refs}
	vs := m.h.opts.Values
	if vs != nil {
		start.Refs = &agentproto.StreamRefs{MinResultBytes: vs.MinBytes()}
	}
	conn, br, err := m.request(start, nil, &agentproto.Response{})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		unbook()
		return nil, err
	}
	w := &worker{m: m, name: spec.Name, res: spec.Resources, digest: bin.Digest, done: make(chan struct{}), unbook: unbook}
	if vs != nil {
		rs := newRefStream(conn, br, vs, func(format string, args ...any) {
			fmt.Fprintf(m.h.opts.Log, "meadowrun: %s: worker %s: %s\n", m.name, spec.Name, fmt.Sprintf(format, args...))
		})
		w.conn = &stream{ReadWriteCloser: rs, r: bufio.NewReaderSize(rs, 64<<10), eof: w.streamEnded}
	} else {
		w.conn = &stream{ReadWriteCloser: conn, r: br, eof: w.streamEnded}
	}
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
func (m *machine) events(c Link, br *bufio.Reader) {
	for {
		line, err := agentproto.ReadLine(br)
		if err != nil {
			m.lostClient(c, fmt.Errorf("%w: %s: connection to the agent lost: %w", driver.ErrUnreachable, m.name, err))
			return
		}
		var ev agentproto.WorkerExit
		if json.Unmarshal(line, &ev) != nil {
			continue
		}
		if ev.Worker == "" {
			var n agentproto.Notice
			if json.Unmarshal(line, &n) == nil && n.Notice != "" && m.h.opts.OnNotice != nil {
				go m.h.opts.OnNotice(m.name, n)
			}
			continue
		}
		m.mu.Lock()
		w := m.workers[ev.Worker]
		m.mu.Unlock()
		if w != nil {
			w.exited(ev.Exit.Driver())
		}
	}
}

// keepalive drops the connection when the machine stops answering.
func (m *machine) keepalive(c Link) {
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
			res <- c.KeepAlive()
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
	if c != nil {
		m.lostClient(c, err)
	}
}

// lostClient drops connection c if it is still m's: its workers are
// reported lost.
func (m *machine) lostClient(c Link, err error) {
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
	ctrl, up := m.ctrl, m.up && m.workers[w.name] == w
	m.mu.Unlock()
	if !up {
		return nil
	}
	// Writes are serialised by their own lock: a write on a dying
	// connection may block until the keepalive gives up, which needs m.mu.
	m.ctrlMu.Lock()
	err := agentproto.WriteRequest(ctrl, agentproto.Kill{Worker: w.name})
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
	io.ReadWriteCloser
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
