package localhost

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/container"
	"github.com/meadowrun-go/meadowrun/internal/pyworker"
	"github.com/meadowrun-go/meadowrun/internal/worker"
)

// Where a worker container finds what the host gives it. The program and
// the Python worker are mounted read-only; the directory of temporary
// files (with the socket the worker receives its file descriptors from)
// is the worker's own.
const (
	ctrRoot   = "/.meadowrun"
	ctrBin    = ctrRoot + "/bin"
	ctrPy     = ctrRoot + "/py"
	ctrTmp    = ctrRoot + "/tmp"
	ctrCode   = ctrRoot + "/code"
	fdsSocket = "fds.sock"
)

// sidecarGrace is how long sidecars must stay up after they start before
// the worker gets its first task: a sidecar that exits within it (a bad
// command, a port it cannot bind) fails the start with its output.
const sidecarGrace = 500 * time.Millisecond

// engine returns the machine's container engine, connecting on first use.
// A failure is not remembered: an engine started later is found.
func (h *Host) engine(ctx context.Context) (*container.Engine, error) {
	h.engineMu.Lock()
	defer h.engineMu.Unlock()
	if h.eng != nil {
		return h.eng, nil
	}
	e, err := container.Open(ctx, container.Options{Host: h.opts.DockerHost})
	if err != nil {
		// Unsupported, too: a host of several machines tries another.
		return nil, &unsupported{fmt.Errorf("local host: %w", err)}
	}
	h.eng = e
	return e, nil
}

// EngineStatus says whether the machine has a usable container engine:
// its version, or why not.
func (h *Host) EngineStatus(ctx context.Context) (string, error) {
	e, err := h.engine(ctx)
	if err != nil {
		return "", err
	}
	v, err := e.Version(ctx)
	if err != nil {
		return "", fmt.Errorf("local host: container engine at %s: %w", e.Host(), err)
	}
	return "docker " + v, nil
}

// containerRunner is a worker in a container, with its sidecars.
type containerRunner struct {
	c        *container.Container
	sidecars []*container.Container
	limit    int64
	killed   atomic.Bool // Kill was called
}

func (r *containerRunner) kill() error {
	r.killed.Store(true)
	return r.c.Kill()
}

func (r *containerRunner) wait() driver.ExitStatus {
	ex := r.c.Wait(context.Background())
	// Killed (128+9) under a memory limit: the engine may learn of the
	// OOM kill only after the exit.
	for i := 0; i < 10 && ex.Code == 137 && r.limit > 0 && !ex.OOMKilled && !r.killed.Load(); i++ {
		time.Sleep(50 * time.Millisecond)
		ex.OOMKilled = r.c.OOMKilled(context.Background())
	}
	st := driver.ExitStatus{Code: ex.Code, OOMKilled: ex.OOMKilled, LimitBytes: r.limit, Lost: ex.Gone}
	// The init of the container reports a worker killed by a signal as
	// 128 + the signal's number.
	if st.Code > 128 && st.Code < 128+65 {
		st.Signal = syscall.Signal(st.Code - 128).String()
		st.Code = -1
	}
	if st.OOMKilled && st.Signal == "" {
		st.Signal = syscall.SIGKILL.String()
		st.Code = -1
	}
	r.remove()
	return st
}

func (r *containerRunner) remove() {
	for _, s := range r.sidecars {
		s.Remove()
	}
	r.c.Remove()
}

// startContainer starts spec's worker in a container of its deployment's
// image: this program (or the Python worker) mounted in read-only, its
// resources as the container's limits, its sidecars sharing its network.
// The worker receives its protocol streams through a Unix socket in its
// temporary directory once the sidecars are up.
func (h *Host) startContainer(ctx context.Context, spec driver.WorkerSpec, gpus, ports []int, so StartOptions) (*proc, error) {
	fail := func(err error) (*proc, error) {
		return nil, fmt.Errorf("local host: worker %s in %s: %w", spec.Name, spec.Deployment.Image, err)
	}
	e, err := h.engine(ctx)
	if err != nil {
		return nil, err
	}
	if err := container.CheckPortsFree(spec.Ports, "this machine"); err != nil {
		return nil, fmt.Errorf("local host: %w", err)
	}
	if err := e.Ensure(ctx, spec.Deployment.Image, auth(spec.Deployment.Credentials)); err != nil {
		return nil, fmt.Errorf("local host: %w", err)
	}
	for _, sc := range spec.Sidecars {
		if err := e.Ensure(ctx, sc.Image, auth(sc.Credentials)); err != nil {
			return nil, fmt.Errorf("local host: sidecar %s: %w", sc.Image, err)
		}
	}
	cs, mounts, err := h.containerCommand(spec, so)
	if err != nil {
		return fail(err)
	}
	tmp, err := os.MkdirTemp("", "meadowrun-worker-")
	if err != nil {
		return fail(fmt.Errorf("temporary directory: %w", err))
	}
	// The image may run as any user: the worker must be able to connect
	// and to write its temporary files.
	os.Chmod(tmp, 0o777)
	work := filepath.Join(tmp, "work")
	os.Mkdir(work, 0o777)
	os.Chmod(work, 0o777)
	sock := filepath.Join(tmp, fdsSocket)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		os.RemoveAll(tmp)
		return fail(fmt.Errorf("socket for the worker's file descriptors: %w", err))
	}
	defer l.Close()
	os.Chmod(sock, 0o777)
	ps, err := newPipes(spec.Name)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	cleanup := func() {
		ps.close()
		os.RemoveAll(tmp)
	}
	cs.Mounts = append(mounts, container.Mount{Source: tmp, Target: ctrTmp})
	for _, m := range h.opts.ContainerMounts {
		cm, err := container.ParseMount(m)
		if err != nil {
			cleanup()
			return fail(err)
		}
		cs.Mounts = append(cs.Mounts, cm)
	}
	cs.Env = append(cs.Env, h.opts.Env...)
	for k, v := range spec.Env {
		cs.Env = append(cs.Env, k+"="+v)
	}
	cs.Env = append(cs.Env, worker.EnvWorker+"=1", worker.EnvWorkerName+"="+spec.Name,
		worker.EnvWorkerFDs+"="+ctrTmp+"/"+fdsSocket, worker.EnvWorkerTmpDir+"="+ctrTmp+"/work")
	cs.Role, cs.Image, cs.Init = "worker", spec.Deployment.Image, true
	cs.MemoryBytes = spec.Resources.MemoryBytes
	cs.NanoCPUs = int64(spec.Resources.LogicalCPU * 1e9)
	cs.Ports = spec.Ports
	cs.Network = h.opts.ContainerNetwork
	for _, id := range gpus {
		cs.GPUs = append(cs.GPUs, h.gpuDeviceID(id))
	}
	for i, sc := range spec.Sidecars {
		cs.ExtraHosts = append(cs.ExtraHosts, "meadowrun-sidecar-"+strconv.Itoa(i)+":127.0.0.1")
		if sc.Name != "" {
			cs.ExtraHosts = append(cs.ExtraHosts, sc.Name+":127.0.0.1")
		}
	}
	c, err := e.Run(ctx, cs)
	if err != nil {
		cleanup()
		if errors.Is(err, container.ErrCannotExec) {
			err = fmt.Errorf("%w%s", err, h.execHint(spec))
		}
		return fail(err)
	}
	r := &containerRunner{c: c, limit: spec.Resources.MemoryBytes}
	abort := func(err error) (*proc, error) {
		r.kill()
		r.remove()
		cleanup()
		return fail(err)
	}
	exited := make(chan struct{})
	go func() {
		c.Wait(context.WithoutCancel(ctx))
		close(exited)
	}()
	// Sidecars share the worker's network, so the worker must run before
	// they start; it waits for its file descriptors until they are up.
	for i, sc := range spec.Sidecars {
		env := make([]string, 0, len(sc.Env))
		for k, v := range sc.Env {
			env = append(env, k+"="+v)
		}
		s, err := e.Run(ctx, container.Spec{Role: "sidecar", Image: sc.Image, Cmd: sc.Args, Env: env, Network: "container:" + c.ID})
		if err != nil {
			return abort(fmt.Errorf("sidecar %d: %w", i, err))
		}
		r.sidecars = append(r.sidecars, s)
	}
	if len(r.sidecars) > 0 {
		select {
		case <-time.After(sidecarGrace):
		case <-ctx.Done():
			return abort(ctx.Err())
		}
		for i, s := range r.sidecars {
			if !s.Running(ctx) {
				ex := s.Wait(ctx)
				return abort(fmt.Errorf("%w: sidecar %d (%s) stopped right after it started, with exit code %d; its output ended with:\n%s",
					container.ErrSidecarExited, i, spec.Sidecars[i].Image, ex.Code, s.Logs(ctx, 4000)))
			}
		}
	}
	if err := worker.SendFDs(l, [4]*os.File{ps.taskR, ps.resW, ps.logR, ps.logW}, exited); err != nil {
		out := c.Logs(context.WithoutCancel(ctx), 4000)
		ex := c.Wait(context.WithoutCancel(ctx))
		return abort(fmt.Errorf("the worker exited with code %d before it took its file descriptors (%v); its output ended with:\n%s%s",
			ex.Code, err, out, h.execHint(spec)))
	}
	ps.handedOver()
	p := &proc{h: h, spec: spec, gpus: gpus, ports: ports, tmp: tmp, run: r,
		conn: &pipeConn{r: ps.resR, w: ps.taskW}, logR: ps.logR, done: make(chan struct{})}
	h.mu.Lock()
	h.workers[p] = true
	h.mu.Unlock()
	go p.wait()
	return p, nil
}

// containerCommand returns the entrypoint of spec's worker container and
// the mounts it needs: this program, or the image's Python running the
// Python worker, with the caller's files when the deployment has some.
func (h *Host) containerCommand(spec driver.WorkerSpec, so StartOptions) (container.Spec, []container.Mount, error) {
	if spec.Runtime == driver.RuntimePython {
		script, err := pyworker.Path(h.opts.CacheDir)
		if err != nil {
			return container.Spec{}, nil, fmt.Errorf("the Python worker: %w", err)
		}
		interp := spec.Deployment.Interpreter
		if interp == "" {
			interp = "python3"
		}
		mounts := []container.Mount{{Source: filepath.Dir(script), Target: ctrPy, ReadOnly: true}}
		cs := container.Spec{Entrypoint: []string{interp, ctrPy + "/" + filepath.Base(script)}, Cmd: []string{}}
		if len(spec.Files) > 0 {
			// The caller's code, importable from the worker's directory.
			dir := so.Dir
			if dir == "" {
				var err error
				if dir, err = os.Getwd(); err != nil {
					return container.Spec{}, nil, err
				}
			}
			mounts = append(mounts, container.Mount{Source: dir, Target: ctrCode, ReadOnly: true})
			cs.WorkingDir = ctrCode
		}
		return cs, mounts, nil
	}
	exe := h.exe
	if so.Executable != "" {
		exe = so.Executable
	}
	exe, err := h.mountableExe(exe)
	if err != nil {
		return container.Spec{}, nil, err
	}
	target := ctrBin + "/" + filepath.Base(exe)
	return container.Spec{Entrypoint: append([]string{target}, h.opts.Args...), Cmd: []string{}},
		[]container.Mount{{Source: exe, Target: target, ReadOnly: true}}, nil
}

// mountableExe returns a path of exe that the engine can bind-mount: the
// program that /proc/self/exe names (the engine would resolve that link in
// its own process), or, when that file was removed or replaced, a copy of
// this process's program made once per host.
func (h *Host) mountableExe(exe string) (string, error) {
	if !strings.HasPrefix(exe, "/proc/") {
		return exe, nil
	}
	h.engineMu.Lock()
	defer h.engineMu.Unlock()
	if h.exeCopy != "" {
		return h.exeCopy, nil
	}
	if p, err := os.Readlink(exe); err == nil && exe == "/proc/self/exe" {
		if st, err := os.Stat(p); err == nil && sameFile(st, exe) {
			return p, nil
		}
	}
	dir, err := os.MkdirTemp("", "meadowrun-program-")
	if err != nil {
		return "", fmt.Errorf("a copy of the program to mount: %w", err)
	}
	dst := filepath.Join(dir, "program")
	if err := copyFile(exe, dst); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("a copy of the program to mount: %w", err)
	}
	h.exeCopy = dst
	return dst, nil
}

// sameFile reports whether st is the file that path names.
func sameFile(st os.FileInfo, path string) bool {
	st2, err := os.Stat(path)
	return err == nil && os.SameFile(st, st2)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// execHint explains why this program may not run in an image: a
// dynamically linked program needs its C library there.
func (h *Host) execHint(spec driver.WorkerSpec) string {
	if spec.Runtime == driver.RuntimePython {
		return fmt.Sprintf("\nThe worker is the image's Python (%q) running meadowrun's Python worker: does the image have Python 3 on its PATH?",
			spec.Deployment.Interpreter)
	}
	f, err := elf.Open(h.exe)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			p.ReadAt(b, 0)
			return fmt.Sprintf("\nThis program is dynamically linked (it needs %s and its C library, which the image may lack): "+
				"build it with CGO_ENABLED=0 to run it in any image, or use an image with that C library", strings.TrimRight(string(b), "\x00"))
		}
	}
	return ""
}

// gpuDeviceID names GPU id as the engine's device requests do: its UUID
// when known.
func (h *Host) gpuDeviceID(id int) string {
	for _, g := range h.cap.GPUs {
		if g.Index == id && g.UUID != "" {
			return g.UUID
		}
	}
	return strconv.Itoa(id)
}

func auth(c *driver.Credentials) *container.Auth {
	if c == nil {
		return nil
	}
	return &container.Auth{Username: c.Username, Password: c.Password}
}

// unsupported is an error that also matches driver.ErrUnsupported.
type unsupported struct{ err error }

func (e *unsupported) Error() string   { return e.err.Error() }
func (e *unsupported) Unwrap() []error { return []error{e.err, driver.ErrUnsupported} }
