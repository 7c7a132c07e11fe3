package agentclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agent"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/layering"
	"github.com/meadowrun-go/meadowrun/internal/pyworker"
	"github.com/meadowrun-go/meadowrun/internal/pyworker/pytest"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// agentTransport is a Transport to the real agent (package agent) serving
// a temporary directory in this process, over its Unix socket: what it
// bootstraps, hears and drops is what an SSH machine's agent would.
type agentTransport struct {
	t       *testing.T
	dir     string
	machine string
	fail    error // Open fails with it, when set
	// idleExit and onIdle are the agent's (IdleExit -1 when 0).
	idleExit time.Duration
	onIdle   func()
	starts   int // agents started

	bytes atomic.Int64 // carried by the streams dialled, both ways

	mu    sync.Mutex
	opens int
	ops   []string // the op of every request line sent
	links []*agentLink
	stop  func()
}

func newAgentTransport(t *testing.T) *agentTransport {
	return &agentTransport{t: t, dir: t.TempDir(), machine: "m1"}
}

func (tr *agentTransport) Open(ctx context.Context) (Link, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.opens++
	if tr.fail != nil {
		return nil, tr.fail
	}
	l := &agentLink{tr: tr}
	tr.links = append(tr.links, l)
	return l, nil
}

// startAgent starts the agent of program sha, unless it runs.
func (tr *agentTransport) startAgent(sha string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	idle := tr.idleExit
	if idle == 0 {
		idle = -1
	}
	tr.starts++
	go func() {
		defer close(done)
		err := agent.Serve(ctx, agent.Options{Dir: tr.dir, Binary: sha, Machine: tr.machine, IdleExit: idle, OnIdle: tr.onIdle, CacheTTL: -1,
			Ready: func() { once.Do(func() { close(ready) }) }})
		if err != nil {
			tr.t.Errorf("agent: %v", err)
		}
		// Gone (idle): the next bootstrap starts another, as a
		// machine's would.
		tr.mu.Lock()
		tr.stop = nil
		tr.mu.Unlock()
	}()
	select {
	case <-ready:
	case <-done:
	}
	stop := func() { cancel(); <-done }
	tr.stop = stop
	tr.t.Cleanup(stop)
}

// cut breaks every link, as a network failure would.
func (tr *agentTransport) cut() {
	tr.mu.Lock()
	links := tr.links
	tr.mu.Unlock()
	for _, l := range links {
		l.Close()
	}
}

func (tr *agentTransport) sent(op string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, o := range tr.ops {
		if o == op {
			n++
		}
	}
	return n
}

type agentLink struct {
	tr *agentTransport

	mu     sync.Mutex
	sock   string
	conns  []net.Conn
	closed bool
}

func (l *agentLink) Bootstrap(ctx context.Context, programs *Programs) (*Program, error) {
	p, err := programs.For(ctx, runtime.GOOS+"/"+runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	l.tr.startAgent(p.SHA)
	l.mu.Lock()
	l.sock = agentproto.SocketName(l.tr.dir, p.SHA, l.tr.machine)
	l.mu.Unlock()
	return p, nil
}

func (l *agentLink) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("link closed")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", l.sock)
	if err != nil {
		return nil, err
	}
	l.conns = append(l.conns, c)
	return &recordingConn{Conn: c, tr: l.tr}, nil
}

func (l *agentLink) KeepAlive() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("link closed")
	}
	return nil
}

func (l *agentLink) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, c := range l.conns {
		c.Close()
	}
	return nil
}

// recordingConn notes the op of the request line it carries first.
type recordingConn struct {
	net.Conn
	tr   *agentTransport
	once sync.Once
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.once.Do(func() {
		if r, err := agentproto.ParseRequest(bytes.TrimSuffix(b, []byte("\n"))); err == nil {
			c.tr.mu.Lock()
			c.tr.ops = append(c.tr.ops, r.Op())
			c.tr.mu.Unlock()
		}
	})
	c.tr.bytes.Add(int64(len(b)))
	return c.Conn.Write(b)
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.tr.bytes.Add(int64(n))
	return n, err
}

// logLines is a Host's Log that signals the lines containing a word.
type logLines struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	word  string
	found chan struct{}
	once  sync.Once
}

func (l *logLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	if l.word != "" && strings.Contains(l.buf.String(), l.word) {
		l.once.Do(func() { close(l.found) })
	}
	return len(b), nil
}

func newHost(t *testing.T, opts Options, trs ...*agentTransport) *Host {
	t.Helper()
	var ms []MachineConfig
	for i, tr := range trs {
		ms = append(ms, MachineConfig{Name: "machine" + string(rune('1'+i)), Transport: tr})
	}
	h, err := New(opts, ms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestAHostConnectsBootstrapsAndAsksTheAgent(t *testing.T) {
	tr := newAgentTransport(t)
	h := newHost(t, Options{Log: io.Discard}, tr)
	n, err := h.Fit(t.Context(), driver.Resources{LogicalCPU: 0.1})
	if err != nil || n < 1 {
		t.Fatalf("Fit: %d, %v", n, err)
	}
	if _, err := h.Fit(t.Context(), driver.Resources{LogicalCPU: 1e6}); !errors.Is(err, driver.ErrNeverFits) {
		t.Fatalf("Fit of a million CPUs: %v, want ErrNeverFits", err)
	}
	ms := h.Describe(t.Context())
	if len(ms) != 1 || ms[0].Err != nil || ms[0].Name != "machine1" {
		t.Fatalf("Describe: %+v", ms)
	}
	if got := tr.sent(agentproto.OpHello); got != 1 {
		t.Errorf("%d hellos, want one session", got)
	}
}

func TestFilesAreUploadedOnceAndNeverAgain(t *testing.T) {
	tr := newAgentTransport(t)
	work := t.TempDir()
	t.Chdir(work)
	if err := os.WriteFile(filepath.Join(work, "data.txt"), []byte("some data"), 0o644); err != nil {
		t.Fatal(err)
	}
	supervise := func(h *Host) {
		t.Helper()
		// This test's agent has no durable jobs (meadowrun sets
		// agent.Jobs), so it refuses the job once the files are there.
		_, err := h.SubmitJob(t.Context(), "", driver.JobSubmission{Job: driver.Job{ID: "j1"}, Files: []string{"data.txt"}})
		if err == nil || !strings.Contains(err.Error(), "cannot run durable jobs") {
			t.Fatalf("SubmitJob: %v, want the agent's refusal", err)
		}
	}
	h := newHost(t, Options{Log: io.Discard}, tr)
	supervise(h)
	supervise(h)
	if got := tr.sent(agentproto.OpPut); got != 1 {
		t.Errorf("%d puts for one file, want 1", got)
	}
	if got := tr.sent(agentproto.OpHave); got != 1 {
		t.Errorf("%d have requests from one host, want 1 (it remembers what the machine has)", got)
	}
	// A new client asks, and the machine has it.
	supervise(newHost(t, Options{Log: io.Discard}, tr))
	if got := tr.sent(agentproto.OpPut); got != 1 {
		t.Errorf("%d puts after a second client, want still 1", got)
	}
	matches, _ := filepath.Glob(filepath.Join(tr.dir, agentproto.FileDir, "*"))
	if len(matches) != 1 {
		t.Errorf("agent's files: %v, want the one file", matches)
	}
}

func TestAnAgentRefusesAnotherProtocolVersion(t *testing.T) {
	tr := newAgentTransport(t)
	h := newHost(t, Options{Log: io.Discard}, tr)
	if _, err := h.Fit(t.Context(), driver.Resources{LogicalCPU: 0.1}); err != nil {
		t.Fatal(err)
	}
	c, err := tr.links[0].Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var resp agentproto.HelloResponse
	if err := exchange(c, bufio.NewReader(c), agentproto.Hello{Version: agentproto.Version - 1, Session: "old"}, &resp); err != nil {
		t.Fatal(err)
	}
	if !resp.Failed() || resp.Machine != nil || !strings.Contains(resp.Error, "this agent speaks version") {
		t.Fatalf("hello of version %d: %+v", agentproto.Version-1, resp)
	}
}

func TestALostMachineIsReportedAndReconnected(t *testing.T) {
	tr := newAgentTransport(t)
	log := &logLines{word: "its tasks run elsewhere", found: make(chan struct{})}
	h := newHost(t, Options{Log: log}, tr)
	if _, err := h.Fit(t.Context(), driver.Resources{LogicalCPU: 0.1}); err != nil {
		t.Fatal(err)
	}
	tr.cut()
	select {
	case <-log.found:
	case <-t.Context().Done():
		t.Fatal("the lost machine was never reported")
	}
	// No machine is up, so the next call reconnects at once.
	if _, err := h.Fit(t.Context(), driver.Resources{LogicalCPU: 0.1}); err != nil {
		t.Fatalf("Fit after reconnecting: %v", err)
	}
	tr.mu.Lock()
	opens := tr.opens
	tr.mu.Unlock()
	if opens != 2 {
		t.Errorf("%d connections, want 2", opens)
	}
	if got := tr.sent(agentproto.OpHello); got != 2 {
		t.Errorf("%d hellos, want a new session after the loss", got)
	}
}

func TestStartGivesUpWhenNoMachineCanBeUsed(t *testing.T) {
	tr := newAgentTransport(t)
	tr.fail = errors.Join(driver.ErrUnreachable, errors.New("no route"))
	h := newHost(t, Options{Log: io.Discard, GiveUpAfter: 1}, tr)
	if _, err := h.Fit(t.Context(), driver.Resources{LogicalCPU: 0.1}); !errors.Is(err, driver.ErrUnreachable) {
		t.Fatalf("Fit: %v, want ErrUnreachable", err)
	}
	if _, err := h.Start(t.Context(), driver.WorkerSpec{Name: "w", Resources: driver.Resources{LogicalCPU: 0.1}}); !errors.Is(err, driver.ErrUnreachable) || !strings.Contains(err.Error(), "giving up") {
		t.Fatalf("Start: %v, want ErrUnreachable giving up", err)
	}
}

func TestAPythonWorkerWithoutItsInterpreterIsUnsupported(t *testing.T) {
	tr1, tr2 := newAgentTransport(t), newAgentTransport(t)
	tr2.machine = "m2"
	h := newHost(t, Options{Log: io.Discard}, tr1, tr2)
	if !h.Capabilities().CanRun(driver.RuntimePython) || !h.Capabilities().CanDeploy(driver.DeployInterpreter) {
		t.Fatalf("capabilities %+v lack Python workers", h.Capabilities())
	}
	if _, err := h.Fit(t.Context(), driver.Resources{LogicalCPU: 0.1}); err != nil {
		t.Fatal(err)
	}
	const missing = "/nonexistent/meadowrun/python3"
	_, err := h.Start(t.Context(), driver.WorkerSpec{Name: "w1", Resources: driver.Resources{LogicalCPU: 0.1},
		Runtime: driver.RuntimePython, Deployment: driver.Deployment{Kind: driver.DeployInterpreter, Interpreter: missing}})
	// ErrNoCapacity would have the coordinator wait for capacity forever.
	if !errors.Is(err, driver.ErrUnsupported) || errors.Is(err, driver.ErrNoCapacity) {
		t.Fatalf("Start: %v, want ErrUnsupported", err)
	}
	for _, want := range []string{missing, "machine1", "machine2", "install it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}

func TestAPythonWorkerRunsWithTheMachinesPython(t *testing.T) {
	pytest.Require(t)
	tr := newAgentTransport(t)
	h := newHost(t, Options{Log: io.Discard}, tr)
	ms := h.Describe(t.Context())
	if len(ms) != 1 || !strings.HasPrefix(ms[0].Python, "3.") {
		t.Fatalf("Describe: %+v, want the machine's python3 version", ms)
	}
	w, err := h.Start(t.Context(), driver.WorkerSpec{Name: "w1", Resources: driver.Resources{LogicalCPU: 0.1},
		Runtime: driver.RuntimePython, Deployment: driver.Deployment{Kind: driver.DeployInterpreter}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	typ, body, err := wire.NewReader(w.Conn()).Next()
	if err != nil || typ != wire.TypeHello {
		t.Fatalf("first frame: type %#x, %v; want a Hello", typ, err)
	}
	hello, err := wire.DecodeHello(body)
	if err != nil || hello.Language != "python" || !hello.Dynamic {
		t.Fatalf("Hello %+v, %v; want the Python worker's", hello, err)
	}
	// The agent wrote the worker's script to its own directory.
	if _, err := os.Stat(filepath.Join(tr.dir, "python-worker", pyworker.Digest(), pyworker.FileName)); err != nil {
		t.Errorf("the Python worker's script is not in the agent's directory: %v", err)
	}
	w.Conn().Close()
	<-w.Done()
}

// The client must stay transport-neutral: a transport is a package of
// its own that imports this one, never the other way round.
func TestTheClientImportsNoTransport(t *testing.T) {
	for _, dep := range layering.Deps(t) {
		if strings.HasPrefix(dep, "golang.org/x/crypto/ssh") || strings.HasSuffix(dep, "/internal/sshhost") || strings.HasPrefix(dep, "k8s.io/") {
			t.Errorf("agentclient depends on %s", dep)
		}
	}
}

// An agent that has decided to exit for being idle refuses new sessions
// (rather than taking one and cutting it off as it exits): the client
// bootstraps the next agent and its session lives on.
func TestASessionIsNeverOpenedOnAnAgentThatIsExiting(t *testing.T) {
	tr := newAgentTransport(t)
	tr.idleExit = 200 * time.Millisecond
	exiting, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	tr.onIdle = func() {
		once.Do(func() {
			close(exiting)
			<-release // the agent has decided and waits, still serving
		})
	}
	h1 := newHost(t, Options{Log: io.Discard}, tr)
	if _, err := h1.Fit(t.Context(), driver.Resources{LogicalCPU: 0.1}); err != nil {
		t.Fatal(err)
	}
	h1.Close()
	select {
	case <-exiting:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not reach its idle exit")
	}
	h2 := newHost(t, Options{Log: io.Discard}, tr)
	fit := make(chan error, 1)
	go func() {
		_, err := h2.Fit(t.Context(), driver.Resources{LogicalCPU: 0.1})
		fit <- err
	}()
	// The new client is turned away while the old agent exits.
	time.Sleep(300 * time.Millisecond)
	close(release)
	if err := <-fit; err != nil {
		t.Fatalf("Fit of a client that met an exiting agent: %v", err)
	}
	// Its session is on the next agent, and lasts.
	time.Sleep(300 * time.Millisecond)
	if ms := h2.Describe(t.Context()); len(ms) != 1 || ms[0].Err != nil {
		t.Fatalf("after the old agent exited: %+v", ms)
	}
	tr.mu.Lock()
	starts := tr.starts
	tr.mu.Unlock()
	if starts != 2 {
		t.Errorf("%d agents started, want 2 (the exiting one and the next)", starts)
	}
}
