package k8shost

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// agentDir is the agent's directory in a pod: an emptyDir volume, so it
// lives as long as the pod.
const agentDir = "/.meadowrun"

// containerName is the name of the agent's container in a pod.
const containerName = "meadowrun"

// execStream is one command run in a pod's container through the API
// server (the pods/exec subresource), as a byte stream: its standard input
// and output. Closing it closes the command's standard input and ends the
// exec session.
type execStream struct {
	in     *io.PipeWriter
	out    *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
	stderr bytes.Buffer // valid after done
	err    error        // valid after done

	closeOnce sync.Once
}

func (s *execStream) Read(p []byte) (int, error) {
	n, err := s.out.Read(p)
	execBytes.Add(int64(n))
	return n, err
}

func (s *execStream) Write(p []byte) (int, error) {
	n, err := s.in.Write(p)
	execBytes.Add(int64(n))
	return n, err
}

// execBytes counts the bytes of every exec stream of the process.
var execBytes atomic.Int64

// ExecStreamBytes returns how many bytes the exec sessions of this
// process's Kubernetes hosts have carried, both ways: a figure for tests
// and diagnostics (what a storage bucket takes off the API server).
func ExecStreamBytes() int64 { return execBytes.Load() }

// Close implements io.Closer.
func (s *execStream) Close() error {
	s.closeOnce.Do(s.close)
	return nil
}

func (s *execStream) close() {
	s.in.Close()
	// The end of standard input is sent, and the session given
	// closeGrace to end by itself (its output drained), before it is cut:
	// the command in the pod then sees its input end and exits, rather
	// than depend on how the kubelet treats a session cut short (it does
	// not kill an exec'd process whose client went). A dial process left
	// running would hold its agent connection open, and keep the agent,
	// and its pod, from ever going idle.
	go func() {
		go io.Copy(io.Discard, s.out)
		select {
		case <-s.done:
		case <-time.After(closeGrace):
		}
		s.cancel()
		s.out.Close()
	}()
}

// closeGrace is how long a closed exec session has to end by itself.
const closeGrace = 5 * time.Second

// CloseWrite closes the command's standard input only.
func (s *execStream) CloseWrite() error { return s.in.Close() }

// wait waits for the command to end and returns its error with what it
// wrote to standard error.
func (s *execStream) wait() error {
	<-s.done
	if s.err != nil {
		if e := strings.TrimSpace(s.stderr.String()); e != "" {
			return fmt.Errorf("%w: %s", s.err, e)
		}
	}
	return s.err
}

// exec runs cmd in the agent container of pod. The stream outlives ctx
// only in that ctx bounds starting it; it ends with Close.
func (h *Host) exec(pod string, cmd []string) (*execStream, error) {
	req := h.cs.CoreV1().RESTClient().Post().Namespace(h.ns).Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: containerName, Command: cmd, Stdin: true, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(h.rest, "GET", req.URL().String())
	if err != nil {
		return nil, err
	}
	spdy, err := remotecommand.NewSPDYExecutor(h.rest, "POST", req.URL())
	if err != nil {
		return nil, err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, err
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	s := &execStream{in: inW, out: outR, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: inR, Stdout: outW, Stderr: &lockedWriter{w: &s.stderr}})
		inR.Close()
		if s.err != nil {
			outW.CloseWithError(fmt.Errorf("%w: %s: exec: %w", driver.ErrUnreachable, pod, s.err))
		} else {
			outW.Close()
		}
	}()
	return s, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// transport reaches the agent of one pod: agentclient.Transport.
type transport struct {
	h   *Host
	pod string
	id  string // the agent's machine id
	// starting is set while the pod is connected to before it is seen
	// Running (bringUp): its exec sessions are retried until the
	// container takes them, and its phase is not checked.
	starting atomic.Bool
}

// Open implements agentclient.Transport: the pod must be running.
func (t *transport) Open(ctx context.Context) (agentclient.Link, error) {
	if t.starting.Load() {
		return &link{t: t}, nil
	}
	if err := t.h.podRunning(ctx, t.pod); err != nil {
		return nil, err
	}
	return &link{t: t}, nil
}

// podRunning returns an error wrapping driver.ErrUnreachable unless pod is
// running.
func (h *Host) podRunning(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := h.cs.CoreV1().Pods(h.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: pod %s was deleted", driver.ErrUnreachable, name)
	}
	if err != nil {
		return fmt.Errorf("%w: pod %s: %w", driver.ErrUnreachable, name, h.classify(err))
	}
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return fmt.Errorf("%w: pod %s is %s%s", driver.ErrUnreachable, name, p.Status.Phase, terminated(p))
	}
	return nil
}

// link is the agentclient.Link of a pod: every stream is an exec of this
// program in dial mode (agentproto.EnvDial).
type link struct {
	t    *transport
	mu   sync.Mutex
	sock string
	exe  string
	// conns are the streams Dial opened, closed with the link: like an
	// SSH connection's channels, they must not outlive it (an exec
	// session left open keeps its agent, and so its pod, from going idle).
	conns  map[*execStream]struct{}
	closed bool
	// spares are dial streams opened while the agent starts, each
	// waiting in the pod for the agent's socket: the first Dials (the
	// control channel, the first requests and worker) find them open
	// instead of each waiting for an exec session and this program's
	// start in dial mode. Unused ones are closed after spareLife.
	spares []*execStream
}

// spareCount is how many dial streams a bootstrap opens ahead: the
// control channel, the fit request and the first worker's start.
const spareCount = 3

// spareLife is how long a spare dial stream waits to be used.
const spareLife = 10 * time.Second

// openSpares opens n dial streams to the agent of socket sock and program
// exe that wait (at most 30 s) in the pod until the agent listens.
func (l *link) openSpares(n int, sock, exe string) {
	script := `s="` + sock + `"; i=0; while [ ! -S "$s" ]; do i=$((i+1)); [ $i -gt 1500 ] && exit 3; sleep 0.02; done; ` +
		agentproto.EnvDial + `="$s" exec "` + exe + `"`
	var opened []*execStream
	for range n {
		s, err := l.t.h.exec(l.t.pod, []string{"sh", "-c", script})
		if err != nil {
			break
		}
		opened = append(opened, s)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		for _, s := range opened {
			s.Close()
		}
		return
	}
	l.spares = append(l.spares, opened...)
	l.mu.Unlock()
	time.AfterFunc(spareLife, func() {
		l.mu.Lock()
		var old []*execStream
		l.spares = slices.DeleteFunc(l.spares, func(s *execStream) bool {
			if slices.Contains(opened, s) {
				old = append(old, s)
				return true
			}
			return false
		})
		l.mu.Unlock()
		for _, s := range old {
			s.Close()
		}
	})
}

// spare takes an open spare dial stream, nil if none; with l.mu held.
func (l *link) spare() *execStream {
	for len(l.spares) > 0 {
		s := l.spares[0]
		l.spares = l.spares[1:]
		select {
		case <-s.done:
			s.Close() // it failed: the socket never came
		default:
			return s
		}
	}
	return nil
}

// dropSpares closes the spare dial streams.
func (l *link) dropSpares() {
	l.mu.Lock()
	spares := l.spares
	l.spares = nil
	l.mu.Unlock()
	for _, s := range spares {
		s.Close()
	}
}

// Bootstrap implements agentclient.Link: one exec uploads the program
// when the pod lacks it and has the pod's waiting shell start it as the
// agent, then waits until the agent listens.
func (l *link) Bootstrap(ctx context.Context, programs *agentclient.Programs) (*agentclient.Program, error) {
	pod := l.t.pod
	bin, err := programs.For(ctx, "linux/amd64")
	if err != nil {
		return nil, fmt.Errorf("%w: pod %s: %w", driver.ErrPlatform, pod, err)
	}
	exe := agentDir + "/" + agentproto.BinDir + "/" + bin.SHA
	sock := agentproto.SocketName(agentDir, bin.SHA, l.t.id)
	idle := l.t.h.opts.IdleTimeout
	if !l.t.h.opts.ReusablePods {
		idle = 30 * time.Second
	}
	// One exec: take the program if the pod lacks it (in a file of this
	// exec's own: clients bootstrapping the pod at once must not execute
	// a file another is writing), start it as an agent unless one of it
	// listens, and wait until it does. The pod's
	// shell (podScript) ends the pod once no agent runs.
	// With a bucket the pod first tries to download the program (its
	// URL and header arrive on standard input, never on a command line).
	fetch, viaBucket := l.t.h.programFetch(ctx, pod, bin)
	ok := false
	defer func() {
		if !ok {
			l.dropSpares()
		}
	}()
	script := `d=` + agentDir + `; e="` + exe + `"; s="` + sock + `"; umask 077; IFS= read -r u; IFS= read -r hd; ` +
		fetchScript(bin.SHA) +
		`if [ -x "$e" ]; then echo have; elif [ -n "$u" ] && m=$(fetch); then echo fetched; ` +
		`else rm -f "$e.up$$"; echo "upload $m" | tr '\n' ' '; echo; mkdir -p "$d/` + agentproto.BinDir + `" && cat > "$e.up$$" && chmod 700 "$e.up$$" && mv -f "$e.up$$" "$e" || exit 1; fi; ` +
		`if [ ! -S "$s" ]; then ` + agentproto.EnvAgent + `="$d" ` + agentproto.EnvMachine + `=` + l.t.id + ` ` + agentproto.EnvIdleExit + `=` + idle.String() +
		` setsid "$e" </dev/null >>"$d/` + agentproto.LogName(l.t.id) + `" 2>&1 & fi; ` +
		`i=0; while [ ! -S "$s" ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; ` +
		`if [ -S "$s" ]; then touch "$d/started"; echo ready; else echo "the agent does not listen after 20s"; fi`
	var s *execStream
	var br *bufio.Reader
	var how string
	for {
		s, err = l.t.h.exec(pod, []string{"sh", "-c", script})
		if err != nil {
			return nil, fmt.Errorf("%w: pod %s: %w", driver.ErrUnreachable, pod, err)
		}
		if _, err = fmt.Fprintf(s, "%s\n%s\n", fetch.URL, fetch.Header); err == nil {
			br = bufio.NewReader(s)
			how, err = br.ReadString('\n')
		}
		if err == nil {
			break
		}
		err = errors.Join(err, s.wait())
		s.Close()
		if !l.t.starting.Load() {
			if perr := l.t.h.podRunning(ctx, pod); perr != nil {
				err = errors.Join(err, perr) // why: the pod's state
			}
			return nil, fmt.Errorf("%w: pod %s: bootstrapping the agent: %w", driver.ErrUnreachable, pod, err)
		}
		// The pod is on its node, its container not started yet: the
		// script did not run.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: pod %s: bootstrapping the agent: %w", driver.ErrUnreachable, pod, context.Cause(ctx))
		case <-time.After(25 * time.Millisecond):
		}
	}
	defer s.Close()
	// The container runs: the spare dial streams can start.
	l.openSpares(spareCount, sock, exe)
	how = strings.TrimSpace(how)
	if why, ok := strings.CutPrefix(how, "upload"); ok {
		if why = strings.TrimSpace(why); viaBucket {
			at := fetch.URL
			if u, err := url.Parse(fetch.URL); err == nil {
				at = u.Scheme + "://" + u.Host // not the signature
			}
			fmt.Fprintf(l.t.h.opts.Log, "[meadowrun] pod %s could not download the program from the %s through %s (%s): it goes through the API server\n", pod, l.t.h.store, at, why)
		}
		f, err := bin.Open()
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(s, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: pod %s: uploading the program: %w", driver.ErrUnreachable, pod, err)
		}
	}
	s.CloseWrite()
	rest, _ := io.ReadAll(br)
	if werr := s.wait(); werr != nil || !strings.Contains(string(rest), "ready") {
		msg := strings.TrimSpace(string(rest))
		if werr != nil {
			msg = strings.TrimSpace(msg + " " + werr.Error())
		}
		if strings.Contains(msg, "No space left") {
			return nil, fmt.Errorf("%w: pod %s: uploading the %s program: %s", driver.ErrDiskFull, pod, driver.Bytes(bin.Size), msg)
		}
		logs := l.t.h.agentLog(pod, l.t.id)
		return nil, fmt.Errorf("%w: pod %s: the agent (this program) did not start: %s; its log says: %s", driver.ErrUnreachable, pod, msg, logs)
	}
	l.mu.Lock()
	l.sock, l.exe = sock, exe
	l.mu.Unlock()
	ok = true
	return bin, nil
}

// fetchScript defines the shell function fetch of a pod's bootstrap: it
// downloads the program of sha256 sha from URL $u (with header $hd, when
// set) with curl or wget, checks its sha256 and installs it as $e; what
// went wrong is its output.
func fetchScript(sha string) string {
	return `get() { if command -v curl >/dev/null 2>&1; then if [ -n "$hd" ]; then curl -fsS -H "$hd" -o "$e.up$$" "$u"; else curl -fsS -o "$e.up$$" "$u"; fi; ` +
		`elif command -v wget >/dev/null 2>&1; then if [ -n "$hd" ]; then wget -q --header "$hd" -O "$e.up$$" "$u"; else wget -q -O "$e.up$$" "$u"; fi; ` +
		`else echo "the image has neither curl nor wget"; return 1; fi; }; ` +
		`fetch() { mkdir -p "$d/` + agentproto.BinDir + `" || return 1; get 2>&1 || return 1; h=$(sha256sum "$e.up$$" 2>&1) || { echo "$h"; return 1; }; ` +
		`[ "${h%% *}" = ` + sha + ` ] || { echo "the download's sha256 is ${h%% *}, not ` + sha + `"; return 1; }; chmod 700 "$e.up$$" && mv -f "$e.up$$" "$e"; }; `
}

// Dial implements agentclient.Link.
func (l *link) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	l.mu.Lock()
	sock, exe := l.sock, l.exe
	l.mu.Unlock()
	if sock == "" {
		return nil, errors.New("kubernetes: dial before bootstrap")
	}
	l.mu.Lock()
	s := l.spare()
	l.mu.Unlock()
	if s == nil {
		var err error
		s, err = l.t.h.exec(l.t.pod, []string{"sh", "-c", agentproto.EnvDial + `=` + sock + ` exec ` + exe})
		if err != nil {
			return nil, fmt.Errorf("%w: pod %s: %w", driver.ErrUnreachable, l.t.pod, err)
		}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		s.Close()
		return nil, fmt.Errorf("%w: pod %s: the connection is closed", driver.ErrUnreachable, l.t.pod)
	}
	if l.conns == nil {
		l.conns = map[*execStream]struct{}{}
	}
	l.conns[s] = struct{}{}
	l.mu.Unlock()
	go func() {
		<-s.done
		l.mu.Lock()
		delete(l.conns, s)
		l.mu.Unlock()
	}()
	return s, nil
}

// KeepAlive implements agentclient.Link: the pod must still run.
func (l *link) KeepAlive() error {
	if l.t.starting.Load() {
		return nil // bringUp watches the pod's start
	}
	return l.t.h.podRunning(context.Background(), l.t.pod)
}

// Close implements agentclient.Link: streams are closed by their users.
func (l *link) Close() error {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	spares := l.spares
	l.spares = nil
	l.mu.Unlock()
	for s := range conns {
		s.Close()
	}
	for _, s := range spares {
		s.Close()
	}
	return nil
}
