package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
)

// Options configure Serve.
type Options struct {
	// Dir is the agent's directory (binaries, files, socket, log).
	Dir string
	// Binary is the sha256 of the agent's own program, which names its
	// socket.
	Binary string
	// Machine is the id of this machine (MachineID), which names the
	// agent's socket, lock, pid file and journal; "" computes it.
	Machine string
	// IdleExit stops the agent after this long without sessions or
	// workers; 0 means 30 minutes, negative never.
	IdleExit time.Duration
	// CacheTTL is how long programs, files and working trees stay unused
	// before the agent removes them; 0 means DefaultCacheTTL, negative
	// forever.
	CacheTTL time.Duration
	// Local configures the machine's driver (tests model machines with it).
	Local localhost.Options
	// Ready, if set, is called once the agent listens, or finds that
	// another agent serves the directory.
	Ready func()
	// IMDS, when set, is the instance metadata service the agent polls
	// every IMDSPoll (0: 5 s) for spot interruption notices (imds.go).
	IMDS     string
	IMDSPoll time.Duration
	// OnIdle, if set, is called when the agent stops for IdleExit, before
	// Serve returns.
	OnIdle func()
}

// Serve runs the agent until ctx ends or it has been idle for
// Options.IdleExit. When another agent already serves the directory it
// returns nil at once.
func Serve(ctx context.Context, opts Options) error {
	if opts.Dir == "" || !validSHA(opts.Binary) {
		return errors.New("agent: no directory or program digest")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if opts.Machine == "" {
		opts.Machine = agentproto.SelfMachineID()
	}
	self := "agent-" + idOf(opts.Binary) + "-" + opts.Machine
	lock, err := os.OpenFile(filepath.Join(opts.Dir, self+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if opts.Ready != nil {
				opts.Ready() // another agent serves this directory
			}
			return nil
		}
		return fmt.Errorf("agent: locking %s: %w", lock.Name(), err)
	}
	if opts.Local.CacheDir == "" {
		opts.Local.CacheDir = opts.Dir // the Python worker's script
	}
	host, err := localhost.New(ctx, opts.Local)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer host.Close()
	sock := agentproto.SocketName(opts.Dir, opts.Binary, opts.Machine)
	os.Remove(sock)
	ln, err := listenUnix(sock)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer func() {
		ln.close()
		syscall.Close(ln.fd)
	}()
	os.Chmod(sock, 0o600)
	if opts.Ready != nil {
		opts.Ready()
	}
	// The pid file lets a person (or a test) find the agent.
	pidFile := filepath.Join(opts.Dir, self+".pid")
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	defer os.Remove(pidFile)
	name, _ := os.Hostname()
	a := &agent{
		dir: opts.Dir, machine: opts.Machine, host: host, sessions: map[string]*session{},
		info: agentproto.Machine{Name: name, OS: runtime.GOOS, Arch: runtime.GOARCH, PID: os.Getpid(),
			Capacity: agentproto.CapacityOf(host.Capacity()), Limiter: host.LimiterKind()},
		activity: make(chan struct{}, 1), pythonDone: make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		a.pythonVersion = probePython(ctx)
		close(a.pythonDone)
	}()
	go func() {
		<-ctx.Done()
		ln.close()
	}()
	idle := opts.IdleExit
	if idle == 0 {
		idle = 30 * time.Minute
	}
	if idle > 0 {
		go a.idleWatch(ctx, idle, func() {
			if opts.OnIdle != nil {
				opts.OnIdle()
			}
			cancel()
		})
	}
	if opts.IMDS != "" {
		go a.watchIMDS(ctx, opts.IMDS, opts.IMDSPoll)
	}
	ttl := opts.CacheTTL
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	if ttl > 0 {
		go a.sweepLoop(ctx, ttl, opts.Binary)
	}
	for {
		c, err := ln.accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("agent: %w", err)
		}
		a.touch()
		go a.serve(ctx, c)
	}
}

type agent struct {
	dir     string
	machine string
	host    *localhost.Host
	info    agentproto.Machine

	// pythonVersion is the python3 of the agent's PATH, valid once
	// pythonDone is closed (see python).
	pythonVersion string
	pythonDone    chan struct{}

	mu       sync.Mutex
	sessions map[string]*session
	running  int
	// stopping is set, with mu held, when the agent decides to exit for
	// being idle: from then on no session opens (hello refuses with
	// KindStopping), so that none is cut off by the exit it raced with.
	stopping bool
	activity chan struct{}
	notice   *agentproto.Notice // the machine's, once told it goes away
}

// session is one client connection's control channel and its workers.
type session struct {
	id  string
	w   io.Writer
	wmu sync.Mutex

	mu      sync.Mutex
	closed  bool
	workers map[string]driver.Worker
}

func (s *session) send(ev agentproto.WorkerExit) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	agentproto.WriteMessage(s.w, ev)
}

func (a *agent) touch() {
	select {
	case a.activity <- struct{}{}:
	default:
	}
}

// idleWatch cancels the agent once nothing has happened for idle while no
// session or worker is left.
func (a *agent) idleWatch(ctx context.Context, idle time.Duration, cancel func()) {
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.activity:
			t.Reset(idle)
		case <-t.C:
			a.mu.Lock()
			busy := len(a.sessions) > 0 || a.running > 0
			a.stopping = !busy
			a.mu.Unlock()
			if !busy {
				cancel()
				return
			}
			t.Reset(idle)
		}
	}
}

func (a *agent) serve(ctx context.Context, c *unixConn) {
	br := bufio.NewReaderSize(c, 64<<10)
	line, err := agentproto.ReadLine(br)
	if err != nil {
		c.Close()
		return
	}
	req, err := agentproto.ParseRequest(line)
	if err != nil {
		reply(c, agentproto.Response{Error: "agent: " + strings.TrimPrefix(err.Error(), "agentproto: "), Kind: agentproto.KindFailed})
		c.Close()
		return
	}
	switch req := req.(type) {
	case *agentproto.Hello:
		a.hello(c, br, req)
	case *agentproto.Fit:
		defer c.Close()
		n, err := a.host.Fit(ctx, req.Resources.Driver())
		if err != nil {
			reply(c, errResponse(err))
			return
		}
		reply(c, agentproto.FitResponse{Fit: n})
	case *agentproto.Have:
		defer c.Close()
		reply(c, agentproto.HaveResponse{Missing: a.missing(req.SHAs)})
	case *agentproto.Put:
		defer c.Close()
		if err := a.put(br, req); err != nil {
			reply(c, errResponse(err))
			return
		}
		reply(c, agentproto.Response{})
	case *agentproto.Start:
		a.start(ctx, c, br, req)
	case agentproto.JobRequest, *agentproto.Supervise:
		defer c.Close()
		reply(c, a.job(ctx, req))
	default:
		reply(c, agentproto.Response{Error: fmt.Sprintf("agent: unknown operation %q", req.Op()), Kind: agentproto.KindFailed})
		c.Close()
	}
}

// reply writes a response line.
func reply(w io.Writer, r any) error { return agentproto.WriteMessage(w, r) }

func errResponse(err error) agentproto.Response {
	kind := agentproto.KindFailed
	switch {
	case errors.Is(err, driver.ErrImageNotFound):
		kind = agentproto.KindImageNotFound
	case errors.Is(err, driver.ErrRegistryAuth):
		kind = agentproto.KindRegistryAuth
	case errors.Is(err, driver.ErrSidecarExited):
		kind = agentproto.KindSidecarExited
	case errors.Is(err, driver.ErrPortInUse):
		kind = agentproto.KindPortInUse
	case errors.Is(err, driver.ErrNoEngine):
		kind = agentproto.KindNoEngine
	case errors.Is(err, driver.ErrEnvironment):
		kind = agentproto.KindEnvironment
	case errors.Is(err, driver.ErrNoCapacity):
		kind = agentproto.KindNoCapacity
	case errors.Is(err, driver.ErrNeverFits):
		kind = agentproto.KindNeverFits
	case errors.Is(err, driver.ErrUnsupported):
		kind = agentproto.KindUnsupported
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		kind = agentproto.KindDiskFull
	case errors.Is(err, os.ErrNotExist):
		kind = agentproto.KindMissing
	}
	return agentproto.Response{Error: strings.TrimPrefix(err.Error(), "local host: "), Kind: kind}
}

// hello opens a session. The connection stays open as its control
// channel: when it closes (the client went away or lost the network), the
// session's workers are killed.
func (a *agent) hello(c *unixConn, br *bufio.Reader, req *agentproto.Hello) {
	defer c.Close()
	if req.Version != agentproto.Version || req.Session == "" {
		reply(c, agentproto.Response{Error: fmt.Sprintf("agent: protocol version %d, session %q: this agent speaks version %d", req.Version, req.Session, agentproto.Version), Kind: agentproto.KindFailed})
		return
	}
	s := &session{id: req.Session, w: c, workers: map[string]driver.Worker{}}
	a.mu.Lock()
	if a.stopping {
		a.mu.Unlock()
		reply(c, agentproto.Response{Error: "agent: exiting after its idle timeout; start a new one", Kind: agentproto.KindStopping})
		return
	}
	old := a.sessions[req.Session]
	a.sessions[req.Session] = s
	a.mu.Unlock()
	if old != nil {
		old.close()
	}
	info := a.info
	info.Python = a.python()
	ectx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	info.Containers, _ = a.host.EngineStatus(ectx)
	cancel()
	s.wmu.Lock()
	err := reply(c, agentproto.HelloResponse{Machine: &info})
	s.wmu.Unlock()
	a.mu.Lock()
	notice := a.notice
	a.mu.Unlock()
	if err == nil && notice != nil {
		s.sendNotice(*notice)
	}
	if err == nil {
		for {
			line, err := agentproto.ReadLine(br)
			if err != nil {
				break
			}
			// Lines this version does not know are passed over.
			if r, err := agentproto.ParseRequest(line); err == nil {
				k, ok := r.(*agentproto.Kill)
				if !ok {
					continue
				}
				s.mu.Lock()
				w := s.workers[k.Worker]
				s.mu.Unlock()
				if w != nil {
					w.Kill()
				}
			}
		}
	}
	a.mu.Lock()
	if a.sessions[req.Session] == s {
		delete(a.sessions, req.Session)
	}
	a.mu.Unlock()
	s.close()
	a.touch()
}

// close kills the session's workers.
func (s *session) close() {
	s.mu.Lock()
	s.closed = true
	ws := slices.Collect(func(yield func(driver.Worker) bool) {
		for _, w := range s.workers {
			if !yield(w) {
				return
			}
		}
	})
	s.mu.Unlock()
	for _, w := range ws {
		w.Kill()
	}
}

func (a *agent) path(kind, sha string) string { return filepath.Join(a.dir, kind, sha) }

func validSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func (a *agent) missing(shas []string) []string {
	var out []string
	for _, s := range shas {
		if !validSHA(s) {
			out = append(out, s)
			continue
		}
		if _, err := os.Stat(a.path(agentproto.FileDir, s)); err == nil {
			markUsed(a.path(agentproto.FileDir, s))
		} else if _, err := os.Stat(a.path(agentproto.BinDir, s)); err == nil {
			markUsed(a.path(agentproto.BinDir, s))
		} else {
			out = append(out, s)
		}
	}
	return out
}

// put stores the req.Size bytes that follow the request, checking their
// digest. Executables (Mode with an execute bit) go to bin/, others to
// files/.
func (a *agent) put(r io.Reader, req *agentproto.Put) error {
	if !validSHA(req.SHA) || req.Size < 0 {
		return fmt.Errorf("agent: put: bad digest %q or size %d", req.SHA, req.Size)
	}
	kind := agentproto.FileDir
	if req.Mode&0o111 != 0 {
		kind = agentproto.BinDir
	}
	dst := a.path(kind, req.SHA)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("agent: put: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".put-*")
	if err != nil {
		return fmt.Errorf("agent: put: %w", err)
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	if req.URL != "" {
		var body io.ReadCloser
		if body, err = download(req); err == nil {
			r = body
			defer body.Close()
		}
	}
	if err == nil {
		_, err = io.Copy(io.MultiWriter(f, h), io.LimitReader(r, req.Size))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("agent: put %s: %w", req.SHA[:12], err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != req.SHA {
		return fmt.Errorf("agent: put: received %s, expected %s (truncated upload?)", got[:12], req.SHA[:12])
	}
	mode := os.FileMode(0o400)
	if kind == agentproto.BinDir {
		mode = 0o500
	}
	os.Chmod(f.Name(), mode)
	if err := os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("agent: put: %w", err)
	}
	return nil
}

// downloadClient makes the downloads of Put requests with a URL.
var downloadClient = &http.Client{Timeout: 10 * time.Minute}

// download starts the GET of a Put's URL.
func download(req *agentproto.Put) (io.ReadCloser, error) {
	hr, err := http.NewRequest(http.MethodGet, req.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	if req.Header != "" {
		k, v, ok := strings.Cut(req.Header, ":")
		if !ok {
			return nil, fmt.Errorf("download: header %q is not Name: value", k)
		}
		hr.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := downloadClient.Do(hr)
	if err != nil {
		// The URL may carry a signature: name only its host.
		return nil, fmt.Errorf("download from %s: %w", hr.URL.Host, errors.Unwrap(err))
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("download from %s: %s", hr.URL.Host, resp.Status)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != req.Size {
		resp.Body.Close()
		return nil, fmt.Errorf("download from %s: %d bytes, want %d", hr.URL.Host, resp.ContentLength, req.Size)
	}
	return resp.Body, nil
}

// deploy materialises the working tree of files, shared by every worker
// with the same files, and returns its path ("" for no files).
func (a *agent) deploy(files []agentproto.File) (string, error) {
	if len(files) == 0 {
		return "", nil
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%s\x00%o\x00", f.Path, f.SHA, f.Mode)
	}
	dst := a.path(agentproto.DeployDir, hex.EncodeToString(h.Sum(nil)))
	if _, err := os.Stat(dst); err == nil {
		markUsed(dst)
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".tree-*")
	if err != nil {
		return "", err
	}
	for _, f := range files {
		rel := filepath.FromSlash(f.Path)
		if !filepath.IsLocal(rel) {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("file path %q leaves the working directory", f.Path)
		}
		if err := copyFile(a.path(agentproto.FileDir, f.SHA), filepath.Join(tmp, rel), os.FileMode(f.Mode&0o777)); err != nil {
			os.RemoveAll(tmp)
			return "", err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(dst); serr == nil {
			return dst, nil // another worker made it first
		}
		return "", err
	}
	return dst, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if mode == 0 {
		mode = 0o644
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// start starts a worker of a session and relays its stream over c.
func (a *agent) start(ctx context.Context, c *unixConn, br *bufio.Reader, req *agentproto.Start) {
	fail := func(err error) {
		reply(c, errResponse(err))
		c.Close()
	}
	a.mu.Lock()
	s := a.sessions[req.Session]
	a.mu.Unlock()
	if s == nil {
		fail(fmt.Errorf("agent: start: no session %q (the client's control channel is closed)", req.Session))
		return
	}
	spec := req.Worker.Driver()
	exe := ""
	switch spec.Runtime {
	case "", driver.RuntimeGo:
		// The program Binary is the worker.
		if !validSHA(req.Binary) {
			fail(fmt.Errorf("agent: start: bad binary digest %q", req.Binary))
			return
		}
		exe = a.path(agentproto.BinDir, req.Binary)
		if _, err := os.Stat(exe); err != nil {
			fail(fmt.Errorf("agent: start: binary %s: %w", req.Binary[:12], err))
			return
		}
		markUsed(exe)
	case driver.RuntimePython:
		// The deployment's interpreter runs the Python worker that this
		// program carries.
	default:
		fail(fmt.Errorf("agent: start: workers of runtime %q are %w", spec.Runtime, driver.ErrUnsupported))
		return
	}
	dir, err := a.deploy(req.Files)
	if err != nil {
		fail(fmt.Errorf("agent: start: deployment files: %w", err))
		return
	}
	if err := a.checkInterpreter(spec, dir); err != nil {
		fail(err)
		return
	}
	name := spec.Name
	spec.Name = s.id + "-" + name
	w, err := a.host.StartWith(ctx, spec, localhost.StartOptions{Executable: exe, Dir: dir})
	if err != nil {
		fail(err)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		w.Kill()
		fail(errors.New("agent: start: the session closed"))
		<-w.Done()
		w.Conn().Close()
		return
	}
	s.workers[name] = w
	s.mu.Unlock()
	a.mu.Lock()
	a.running++
	a.mu.Unlock()
	if err := reply(c, agentproto.Response{}); err != nil {
		w.Kill()
	}
	// The client's bytes go to the worker; when the client closes the
	// stream, the worker is asked to stop by the end of its input.
	if req.Refs != nil {
		relayRefs(*req.Refs, c, br, w.Conn(), func() { w.Conn().Close() })
	} else {
		go func() {
			io.Copy(w.Conn(), br)
			w.Conn().Close()
		}()
		io.Copy(c, w.Conn())
	}
	c.CloseWrite()
	<-w.Done()
	w.Conn().Close()
	c.Close()
	s.mu.Lock()
	delete(s.workers, name)
	s.mu.Unlock()
	a.mu.Lock()
	a.running--
	a.mu.Unlock()
	a.touch()
	s.send(agentproto.WorkerExit{Worker: name, Exit: agentproto.ExitStatusOf(w.Exit())})
}

// RunProcess serves as the agent in a process started with EnvAgent set
// to its directory, and returns the exit code. The variable is removed so
// that the workers and commands the agent starts do not inherit it.
func RunProcess() int {
	dir := os.Getenv(EnvAgent)
	os.Unsetenv(EnvAgent)
	return Run(dir)
}

// Run serves as the agent of dir until SIGTERM or SIGINT, or until idle,
// and returns the exit code. SIGHUP is ignored: the agent outlives the SSH
// session that started it.
func Run(dir string) int {
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "meadowrun agent: %v\n", err)
		return 1
	}
	sha := filepath.Base(exe)
	if !validSHA(sha) {
		// Not started from the cache (meadowrun agent by hand).
		f, err := os.Open(exe)
		if err != nil {
			fmt.Fprintf(os.Stderr, "meadowrun agent: %v\n", err)
			return 1
		}
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		sha = hex.EncodeToString(h.Sum(nil))
	}
	machine := os.Getenv(agentproto.EnvMachine)
	os.Unsetenv(agentproto.EnvMachine)
	var local localhost.Options
	if m := os.Getenv(agentproto.EnvContainerMounts); m != "" {
		local.ContainerMounts = strings.Split(m, ",")
	}
	os.Unsetenv(agentproto.EnvContainerMounts)
	if v := os.Getenv(agentproto.EnvMilliCPUs); v != "" {
		if m, err := strconv.ParseInt(v, 10, 64); err == nil && m > 0 {
			local.LogicalCPU = float64(m) / 1000
		}
	}
	os.Unsetenv(agentproto.EnvMilliCPUs)
	idle := time.Duration(0)
	if v := os.Getenv(agentproto.EnvIdleExit); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "meadowrun agent: %s=%q: %v\n", agentproto.EnvIdleExit, v, err)
			return 1
		}
		if idle = d; idle == 0 {
			idle = -1
		}
	}
	os.Unsetenv(agentproto.EnvIdleExit)
	opts := Options{Dir: dir, Binary: sha, Machine: machine, Ready: readySignal(), Local: local, IdleExit: idle}
	if err := instanceOptions(&opts); err != nil {
		fmt.Fprintf(os.Stderr, "meadowrun agent: %v\n", err)
		return 1
	}
	if err := Serve(ctx, opts); err != nil {
		fmt.Fprintf(os.Stderr, "%s meadowrun agent: %v\n", time.Now().Format(time.RFC3339), err)
		return 1
	}
	return 0
}

// readySignal returns the Ready callback of an agent whose starter asked,
// with EnvReadyFD, to hear on that descriptor when it listens: it writes
// "ready" and closes it. The descriptor is closed on exec at once, so no
// worker keeps it, and the starter hears the end of the stream without a
// "ready" if the agent dies first.
func readySignal() func() {
	v := os.Getenv(agentproto.EnvReadyFD)
	os.Unsetenv(agentproto.EnvReadyFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "meadowrun-ready")
	var once sync.Once
	return func() {
		once.Do(func() {
			f.Write([]byte(agentproto.ReadyLine + "\n"))
			f.Close()
		})
	}
}
