// Package localhost is the driver that runs workers as processes on this
// machine: the user's own binary re-executed in worker mode (or, for
// RuntimePython, an interpreter running meadowrun's Python worker), admitted
// against the machine's capacity, each in its own process group and memory
// group, with GPUs assigned per worker.
package localhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/container"
	"github.com/meadowrun-go/meadowrun/internal/pyenv"
	"github.com/meadowrun-go/meadowrun/internal/pyworker"
	"github.com/meadowrun-go/meadowrun/internal/shm"
	"github.com/meadowrun-go/meadowrun/internal/sysres"
	"github.com/meadowrun-go/meadowrun/internal/worker"
)

// Options configure a local host. The zero value re-executes the running
// binary and detects the machine.
type Options struct {
	// Executable is the worker binary; "" means this process's own.
	Executable string
	// Args are passed to the worker binary.
	Args []string
	// Env is added to the worker's environment (KEY=VALUE).
	Env []string
	// Limiter forces a memory enforcement mechanism: "cgroup2", "cgroup1"
	// or "watchdog"; "" picks the best available.
	Limiter string
	// WatchInterval is the watchdog's sampling interval (where it is the
	// limiter); 0 means 50 ms.
	WatchInterval time.Duration
	// Capacity, when set, replaces the detected capacity (tests use it to
	// model a smaller machine).
	Capacity *sysres.Capacity
	// LogicalCPU and MemoryBytes, when positive, replace those of the
	// detected capacity: a smaller budget than the machine has.
	LogicalCPU  float64
	MemoryBytes int64
	// NvidiaSMI is the path of nvidia-smi; "" looks it up in PATH.
	NvidiaSMI string
	// GPULockDir holds a lock file per GPU, which the process that gave
	// a GPU to a worker holds until the worker exits, so that every
	// meadowrun process of the machine (local hosts, SSH agents of any
	// program, any user) gives a GPU to one worker at a time. "" means
	// meadowrun-gpus in the system's temporary directory.
	GPULockDir string
	// CacheDir holds what workers need written to disk (the Python
	// worker's script, the Python environments of environment
	// deployments, under envs/); "" means pyworker.DefaultCacheDir.
	CacheDir string
	// DockerHost is the address of the container engine that runs
	// container deployments; "" means DOCKER_HOST, or the engine's
	// default socket.
	DockerHost string
	// ContainerNetwork is the network worker containers join ("host",
	// "none", a network's name); "" means the engine's default.
	ContainerNetwork string
	// ContainerMounts are bind mounts of every worker container,
	// "HOST_PATH:CONTAINER_PATH" or "HOST_PATH:CONTAINER_PATH:ro".
	ContainerMounts []string
}

// Host is the local driver.
type Host struct {
	opts    Options
	exe     string
	cap     sysres.Capacity
	limiter sysres.Limiter
	// ooms counts the kernel's OOM kills in this process's memory cgroup,
	// when the watchdog enforces limits (nil otherwise): in a container
	// with a memory limit, a worker may reach it between two samples.
	ooms *sysres.OOMCounter

	mu      sync.Mutex
	closed  bool
	cpu     float64
	mem     int64
	gpuUsed map[int]*os.File // GPU index → its held lock file (nil: none could be had)
	workers map[*proc]bool
	ports   map[int]bool // the ports workers hold

	envs *pyenv.Builder // the Python environments of environment deployments

	engineMu sync.Mutex
	eng      *container.Engine // nil until a container deployment needs it
	exeCopy  string            // a copy of this program to mount, when it needs one
}

var _ driver.Host = (*Host)(nil)

// New detects the machine and prepares memory enforcement.
func New(ctx context.Context, opts Options) (*Host, error) {
	exe := opts.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("local host: finding this program's executable: %w", err)
		}
	}
	cache := opts.CacheDir
	if cache == "" {
		cache = pyworker.DefaultCacheDir()
	}
	h := &Host{opts: opts, exe: exe, gpuUsed: map[int]*os.File{}, workers: map[*proc]bool{}, ports: map[int]bool{},
		envs: &pyenv.Builder{Dir: filepath.Join(cache, "envs")}}
	if opts.Capacity != nil {
		h.cap = *opts.Capacity
	} else {
		c, err := sysres.Detect(ctx, sysres.DetectOptions{NvidiaSMI: opts.NvidiaSMI})
		if err != nil {
			return nil, fmt.Errorf("local host: %w", err)
		}
		h.cap = c
	}
	if opts.LogicalCPU > 0 {
		h.cap.LogicalCPU = opts.LogicalCPU
	}
	if opts.MemoryBytes > 0 {
		h.cap.MemoryBytes = opts.MemoryBytes
	}
	lim, err := sysres.NewLimiter(sysres.LimiterOptions{Force: opts.Limiter, WatchInterval: opts.WatchInterval})
	if err != nil {
		return nil, fmt.Errorf("local host: memory enforcement: %w", err)
	}
	h.limiter = lim
	if lim.Kind() == sysres.KindWatchdog {
		h.ooms, _ = sysres.NewOOMCounter()
	}
	return h, nil
}

// Name implements driver.Host.
func (h *Host) Name() string { return "localhost" }

// Capacity returns what the machine offers.
func (h *Host) Capacity() sysres.Capacity { return h.cap }

// LimiterKind names the memory enforcement in use.
func (h *Host) LimiterKind() string { return h.limiter.Kind() }

// Capabilities implements driver.Host.
func (h *Host) Capabilities() driver.Capabilities {
	// Full slices, shared by every call (asked for once per job): an
	// append by a caller copies them.
	return driver.Capabilities{CapturesOutput: true, ProcessExits: true, MemoryLimits: true, Sidecars: true, Ports: true,
		Runtimes: localRuntimes[:len(localRuntimes):len(localRuntimes)], Deployments: localDeployments[:len(localDeployments):len(localDeployments)]}
}

var (
	localRuntimes    = []driver.Runtime{driver.RuntimePython}
	localDeployments = []driver.DeploymentKind{driver.DeployInterpreter, driver.DeployContainer, driver.DeployEnvironment}
)

// Environments returns the builder of the Python environments of
// environment deployments.
func (h *Host) Environments() *pyenv.Builder { return h.envs }

// useEnvironment builds (or finds) the Python environment of spec, an
// environment deployment, and returns spec running the environment's
// interpreter, with the environment first in PATH for the commands it
// runs.
func (h *Host) useEnvironment(ctx context.Context, spec driver.WorkerSpec) (driver.WorkerSpec, error) {
	env, err := h.envs.Ensure(ctx, spec.Deployment.Environment)
	if err != nil {
		return spec, fmt.Errorf("local host: worker %s: %w", spec.Name, err)
	}
	spec.Deployment.Interpreter = env.Python
	vars := maps.Clone(spec.Env)
	if vars == nil {
		vars = map[string]string{}
	}
	path, ok := vars["PATH"]
	if !ok {
		path = os.Getenv("PATH")
	}
	vars["PATH"] = filepath.Join(env.Dir, "bin") + string(os.PathListSeparator) + path
	if spec.Deployment.Environment.Manager == driver.ManagerConda {
		vars["CONDA_PREFIX"] = env.Dir
	} else {
		vars["VIRTUAL_ENV"] = env.Dir
	}
	spec.Env = vars
	return spec, nil
}

func (h *Host) describe() string {
	s := fmt.Sprintf("this machine has %g logical CPUs, %s of memory", h.cap.LogicalCPU, driver.Bytes(h.cap.MemoryBytes))
	if len(h.cap.GPUs) == 0 {
		s += ", no GPUs"
	} else {
		s += fmt.Sprintf(", %d GPUs", len(h.cap.GPUs))
		for _, g := range h.cap.GPUs {
			s += fmt.Sprintf(" [%d: %s %s]", g.Index, g.Name, driver.Bytes(g.MemoryBytes))
		}
	}
	if len(h.cap.Flags) > 0 {
		s += ", flags " + strings.Join(h.cap.Flags, ",")
	}
	return s + fmt.Sprintf(", %s of free disk", driver.Bytes(h.cap.EphemeralStorageBytes))
}

// Fit implements driver.Host.
func (h *Host) Fit(ctx context.Context, r driver.Resources) (int, error) {
	never := func(what string) (int, error) {
		return 0, fmt.Errorf("local host: %s %w: %s", what, driver.ErrNeverFits, h.describe())
	}
	if r.LogicalCPU > h.cap.LogicalCPU {
		return never(fmt.Sprintf("a request for %g logical CPUs", r.LogicalCPU))
	}
	if r.MemoryBytes > h.cap.MemoryBytes {
		return never(fmt.Sprintf("a request for %s of memory", driver.Bytes(r.MemoryBytes)))
	}
	gpus := int(math.Ceil(r.GPUs))
	if gpus > len(h.cap.GPUs) {
		return never(fmt.Sprintf("a request for %g GPUs", r.GPUs))
	}
	if gpus > 0 && r.GPUMemoryBytes > 0 && len(h.eligibleGPUs(gpus, r.GPUMemoryBytes)) < gpus {
		return never(fmt.Sprintf("a request for %s of GPU memory on %d GPUs", driver.Bytes(r.GPUMemoryBytes), gpus))
	}
	for _, f := range r.Flags {
		if !slices.Contains(h.cap.Flags, f) {
			return never(fmt.Sprintf("a request for the flag %q", f))
		}
	}
	if r.EphemeralBytes > h.cap.EphemeralStorageBytes {
		return never(fmt.Sprintf("a request for %s of ephemeral storage", driver.Bytes(r.EphemeralBytes)))
	}
	n := math.MaxInt32
	limit := func(have, need float64) {
		if need > 0 {
			n = min(n, int(have/need+1e-9))
		}
	}
	limit(h.cap.LogicalCPU, r.LogicalCPU)
	limit(float64(h.cap.MemoryBytes), float64(r.MemoryBytes))
	if gpus > 0 {
		limit(float64(len(h.eligibleGPUs(1, r.GPUMemoryBytes/int64(gpus)))), float64(gpus))
	}
	return n, nil
}

// eligibleGPUs lists GPUs with at least perGPU bytes, total bytes spread
// over n of them.
func (h *Host) eligibleGPUs(n int, total int64) []int {
	per := int64(0)
	if n > 0 {
		per = total / int64(n)
	}
	var ids []int
	for _, g := range h.cap.GPUs {
		if g.MemoryBytes >= per {
			ids = append(ids, g.Index)
		}
	}
	return ids
}

// reserve books r, or fails with ErrNoCapacity.
func (h *Host) reserve(r driver.Resources) ([]int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("local host: closed")
	}
	if h.cpu+r.LogicalCPU > h.cap.LogicalCPU+1e-9 || h.mem+r.MemoryBytes > h.cap.MemoryBytes {
		return nil, fmt.Errorf("local host: %w: %g of %g CPUs and %s of %s booked", driver.ErrNoCapacity,
			h.cpu, h.cap.LogicalCPU, driver.Bytes(h.mem), driver.Bytes(h.cap.MemoryBytes))
	}
	var gpus []int
	if n := int(math.Ceil(r.GPUs)); n > 0 {
		held := map[int]*os.File{}
		for _, id := range h.eligibleGPUs(n, r.GPUMemoryBytes) {
			if len(gpus) == n {
				break
			}
			if _, used := h.gpuUsed[id]; used {
				continue
			}
			lf, free := h.lockGPU(id)
			if !free {
				continue // another process's worker has it
			}
			gpus = append(gpus, id)
			held[id] = lf
		}
		if len(gpus) < n {
			for _, lf := range held {
				closeLock(lf)
			}
			return nil, fmt.Errorf("local host: %w: all eligible GPUs are assigned (to workers of this or other processes)", driver.ErrNoCapacity)
		}
		maps.Copy(h.gpuUsed, held)
	}
	h.cpu += r.LogicalCPU
	h.mem += r.MemoryBytes
	return gpus, nil
}

func (h *Host) release(r driver.Resources, gpus []int, p *proc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cpu -= r.LogicalCPU
	h.mem -= r.MemoryBytes
	for _, id := range gpus {
		closeLock(h.gpuUsed[id])
		delete(h.gpuUsed, id)
	}
	delete(h.workers, p)
}

// Start implements driver.Host: it starts the worker binary in worker
// mode, in its own process group and memory group.
func (h *Host) Start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	return h.StartWith(ctx, spec, StartOptions{})
}

// StartOptions change, for one worker, what Options set for all of them.
type StartOptions struct {
	// Executable replaces Options.Executable when not empty.
	Executable string
	// Dir is the worker's working directory; "" keeps this process's.
	Dir string
}

// StartWith is Start with a per-worker executable and directory: the agent
// of a remote machine starts the binaries of several programs.
func (h *Host) StartWith(ctx context.Context, spec driver.WorkerSpec, so StartOptions) (driver.Worker, error) {
	if spec.Deployment.Kind == driver.DeployEnvironment {
		var err error
		if spec, err = h.useEnvironment(ctx, spec); err != nil {
			return nil, err
		}
	}
	ctr := spec.Deployment.Kind == driver.DeployContainer
	if len(spec.Sidecars) > 0 && !ctr {
		return nil, fmt.Errorf("local host: sidecar containers share the network of a worker container: "+
			"run the job with a container deployment (ContainerImage) to use them: %w", driver.ErrUnsupported)
	}
	if !ctr {
		// A worker process listens on the machine's ports itself: they
		// need only be free.
		if err := container.CheckPortsFree(spec.Ports, "this machine"); err != nil {
			return nil, fmt.Errorf("local host: %w", err)
		}
	}
	ports, err := h.bookPorts(spec.Ports)
	if err != nil {
		return nil, err
	}
	gpus, err := h.reserve(spec.Resources)
	if err != nil {
		h.unbookPorts(ports)
		return nil, err
	}
	var p *proc
	if ctr {
		p, err = h.startContainer(ctx, spec, gpus, ports, so)
	} else {
		p, err = h.start(spec, gpus, ports, so)
	}
	if err != nil {
		h.release(spec.Resources, gpus, nil)
		h.unbookPorts(ports)
		return nil, err
	}
	return p, nil
}

// bookPorts books the ports of a worker: a port is the machine's, so that
// while one worker holds it another that needs it waits (ErrNoCapacity).
func (h *Host) bookPorts(specs []string) ([]int, error) {
	var ports []int
	for _, ps := range specs {
		lo, hi, err := container.PortRange(ps)
		if err != nil {
			return nil, err
		}
		for n := lo; n <= hi; n++ {
			ports = append(ports, n)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range ports {
		if h.ports[n] {
			return nil, fmt.Errorf("local host: %w: port %d is held by another worker", driver.ErrNoCapacity, n)
		}
	}
	for _, n := range ports {
		h.ports[n] = true
	}
	return ports, nil
}

func (h *Host) unbookPorts(ports []int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range ports {
		delete(h.ports, n)
	}
}

// command returns the program and arguments of spec's worker: for
// RuntimePython the deployment's interpreter (python3 when unset) running
// the Python worker's script, otherwise the Go worker binary.
func (h *Host) command(spec driver.WorkerSpec, so StartOptions) (string, []string, error) {
	if spec.Runtime == driver.RuntimePython {
		script, err := pyworker.Path(h.opts.CacheDir)
		if err != nil {
			return "", nil, fmt.Errorf("local host: the Python worker of %s: %w", spec.Name, err)
		}
		interp := spec.Deployment.Interpreter
		if interp == "" {
			interp = "python3"
		}
		return interp, []string{script}, nil
	}
	if so.Executable != "" {
		return so.Executable, h.opts.Args, nil
	}
	return h.exe, h.opts.Args, nil
}

func (h *Host) start(spec driver.WorkerSpec, gpus, ports []int, so StartOptions) (*proc, error) {
	exe, args, err := h.command(spec, so)
	if err != nil {
		return nil, err
	}
	ps, err := newPipes(spec.Name)
	if err != nil {
		return nil, err
	}
	closeAll := ps.close
	// The worker's own temporary files (a command's result file) live in
	// a directory removed when it exits, also when it was killed.
	tmp, err := os.MkdirTemp("", "meadowrun-worker-")
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("local host: temporary directory for worker %s: %w", spec.Name, err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = so.Dir
	cmd.Env = append(workerEnv(os.Environ(), h.opts.Env, spec, gpus), worker.EnvWorkerTmpDir+"="+tmp)
	cmd.Stdout, cmd.Stderr = ps.logW, ps.logW
	cmd.ExtraFiles = []*os.File{ps.taskR, ps.resW, ps.logR} // fds 3, 4, 5
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Workers get a result log (fd 6): memory this host reads after the
	// worker's death, so that the worker need not write each result at
	// once (docs/protocol.md, "Result log").
	rlog, err := shm.Create("meadowrun-results-"+spec.Name, shm.ResultLogSize)
	if err == nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, rlog.File())
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", worker.EnvWorkerResultLog, worker.FDResultLog))
	} else {
		rlog = nil // best effort: the worker then writes every result at once
	}
	closeAll = func() {
		ps.close()
		if rlog != nil {
			rlog.Close()
		}
	}

	group, err := h.limiter.NewGroup(spec.Name, spec.Resources.MemoryBytes)
	if err != nil {
		closeAll()
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("local host: memory group for worker %s: %w", spec.Name, err)
	}
	var oomBase int64
	if h.ooms != nil {
		oomBase, _ = h.ooms.Count()
	}
	if err := cmd.Start(); err != nil {
		group.Close()
		closeAll()
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("local host: starting worker %s (%s): %w", spec.Name, exe, err)
	}
	if err := group.Attach(cmd.Process.Pid); err != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		group.Close()
		closeAll()
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("local host: limiting the memory of worker %s: %w", spec.Name, err)
	}
	ps.handedOver()
	p := &proc{
		h: h, spec: spec, gpus: gpus, ports: ports, tmp: tmp,
		run:  &processRunner{name: spec.Name, cmd: cmd, group: group, limit: spec.Resources.MemoryBytes, ooms: h.ooms, oomBase: oomBase},
		conn: newPipeConn(ps.resR, ps.taskW, group, spec.Resources.MemoryBytes), logR: ps.logR, rlog: rlog,
		done: make(chan struct{}),
	}
	h.mu.Lock()
	h.workers[p] = true
	h.mu.Unlock()
	go p.wait()
	return p, nil
}

// pipes are a worker's protocol streams: tasks, results, and its output
// socket. The worker gets taskR, resW, logR and logW; its host keeps
// taskW, resR and a copy of logR, to recover output a dying worker did not
// forward.
type pipes struct {
	taskR, taskW, resR, resW, logR, logW *os.File
}

func newPipes(name string) (*pipes, error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	p := &pipes{}
	var err1, err2, err3 error
	p.taskR, p.taskW, err1 = pipe()
	p.resR, p.resW, err2 = pipe()
	// Output goes through a stream socket rather than a pipe: the worker
	// peeks at it, forwards it, and only then consumes it, so that what a
	// worker printed just before dying (os.Exit, a crash) is still there
	// for drain.
	p.logR, p.logW, err3 = socketPair()
	if err3 == nil {
		files = append(files, p.logR, p.logW)
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		closeAll()
		return nil, fmt.Errorf("local host: pipes for worker %s: %w", name, err)
	}
	// 1 MiB pipes instead of 64 KiB carry large payloads about four times
	// faster (fewer wake-ups per megabyte). Best effort: the kernel may cap
	// the size (fs.pipe-max-size).
	for _, f := range []*os.File{p.taskW, p.resW} {
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { setPipeSize(fd, 1<<20) })
		}
	}
	return p, nil
}

// close closes every end.
func (p *pipes) close() {
	for _, f := range []*os.File{p.taskR, p.taskW, p.resR, p.resW, p.logR, p.logW} {
		f.Close()
	}
}

// handedOver closes the ends the worker has, keeping the host's, and
// makes the host's copy of the output reader non-blocking for drain.
func (p *pipes) handedOver() {
	p.taskR.Close()
	p.resW.Close()
	p.logW.Close()
	syscall.SetNonblock(int(p.logR.Fd()), true)
}

func workerEnv(base, extra []string, spec driver.WorkerSpec, gpus []int) []string {
	env := make([]string, 0, len(base)+len(extra)+len(spec.Env)+4)
	for _, kv := range base {
		if !strings.HasPrefix(kv, worker.EnvWorkerPrefix) && !strings.HasPrefix(kv, "CUDA_VISIBLE_DEVICES=") {
			env = append(env, kv)
		}
	}
	env = append(env, extra...)
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	ids := make([]string, len(gpus))
	for i, id := range gpus {
		ids[i] = strconv.Itoa(id)
	}
	// An empty CUDA_VISIBLE_DEVICES hides every GPU from a worker that
	// asked for none.
	env = append(env, "CUDA_VISIBLE_DEVICES="+strings.Join(ids, ","))
	return append(env, worker.EnvWorker+"=1", worker.EnvWorkerName+"="+spec.Name)
}

// Close implements driver.Host: it kills every worker still running.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	ps := make([]*proc, 0, len(h.workers))
	for p := range h.workers {
		ps = append(ps, p)
	}
	h.mu.Unlock()
	for _, p := range ps {
		p.Kill()
		<-p.done
	}
	if h.eng != nil {
		h.eng.Close()
	}
	if h.exeCopy != "" {
		os.RemoveAll(filepath.Dir(h.exeCopy))
	}
	return h.limiter.Close()
}

// proc is one worker process.
type proc struct {
	h     *Host
	spec  driver.WorkerSpec
	gpus  []int
	ports []int
	run   runner
	tmp   string // the worker's temporary directory
	conn  *pipeConn
	logR  *os.File
	rlog  *shm.Region // the worker's result log, nil if it has none
	done  chan struct{}
	exit  driver.ExitStatus
}

// runner is how a worker runs: a process of this machine, or a container.
type runner interface {
	// kill stops the worker and everything it started, without waiting.
	kill() error
	// wait blocks until the worker has exited, cleans up what it leaves
	// behind, and reports how it ended (all but Output).
	wait() driver.ExitStatus
}

// processRunner is a worker process, in its own process group and memory
// group.
type processRunner struct {
	name  string
	cmd   *exec.Cmd
	group sysres.Group
	limit int64
	// ooms, when set, is the enclosing cgroup's OOM kill count, oomBase
	// its value when the worker started.
	ooms    *sysres.OOMCounter
	oomBase int64
}

func (r *processRunner) kill() error {
	if err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("local host: killing worker %s: %w", r.name, err)
	}
	return nil
}

func (r *processRunner) wait() driver.ExitStatus {
	err := r.cmd.Wait()
	st := driver.ExitStatus{Code: -1, LimitBytes: r.limit}
	var ee *exec.ExitError
	if err == nil {
		st.Code = 0
	} else if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Signal = ws.Signal().String()
		} else {
			st.Code = ee.ExitCode()
		}
	}
	// Commands the worker started die with it.
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	if peak, err := r.group.PeakBytes(); err == nil {
		st.PeakMemoryBytes = peak
	}
	if oom, err := r.group.OOMKilled(); err == nil {
		st.OOMKilled = oom
	}
	// The watchdog sees only its own kills. A worker with a limit that
	// died of SIGKILL while the kernel killed for memory in this
	// process's cgroup (the container's limit, a little above the
	// worker's) was that kill. Another worker killed in the same cgroup
	// at the same moment would be taken for it too.
	if !st.OOMKilled && r.ooms != nil && r.limit > 0 && st.Signal == syscall.SIGKILL.String() {
		if n, err := r.ooms.Count(); err == nil && n > r.oomBase {
			st.OOMKilled = true
		}
	}
	r.group.Close()
	return st
}

func (p *proc) Name() string             { return p.spec.Name }
func (p *proc) Machine() string          { return "localhost" }
func (p *proc) Conn() io.ReadWriteCloser { return p.conn }
func (p *proc) Done() <-chan struct{}    { return p.done }
func (p *proc) Exit() driver.ExitStatus  { return p.exit }

// HasResultLog implements driver.ResultLogger.
func (p *proc) HasResultLog() bool { return p.rlog != nil }

func (p *proc) Kill() error {
	if err := p.run.kill(); err != nil {
		return err
	}
	// Killed, the worker cannot remove its temporary files; they go now
	// rather than when wait sees it gone, which a process that exits
	// after cancelling its job may not live to see.
	os.RemoveAll(p.tmp)
	return nil
}

// maxTail bounds the unforwarded output kept from a dead worker.
const maxTail = 64 << 10

func (p *proc) wait() {
	st := p.run.wait()
	os.RemoveAll(p.tmp)
	var skip uint64
	if p.rlog != nil {
		// Output the worker forwarded on its stream just before it died
		// but had not consumed yet: the coordinator has it already.
		skip = p.rlog.OutputPending()
	}
	st.Output = drain(p.logR, skip)
	p.logR.Close()
	if p.rlog != nil {
		st.ResultLog = p.rlog.Snapshot()
		p.rlog.Close()
	}
	// The connection stays open: the coordinator still reads the results
	// the worker wrote before it died, then closes it.
	p.exit = st
	p.h.release(p.spec.Resources, p.gpus, p)
	p.h.unbookPorts(p.ports)
	close(p.done)
}

// drain reads what is left in the log pipe, less its first skip bytes,
// keeping the last maxTail bytes.
func drain(f *os.File, skip uint64) []byte {
	var out []byte
	buf := make([]byte, 32<<10)
	fd := int(f.Fd())
	syscall.SetNonblock(fd, true)
	for {
		n, err := syscall.Read(fd, buf)
		if n > 0 && skip > 0 {
			k := int(min(skip, uint64(n)))
			skip -= uint64(k)
			copy(buf, buf[k:n])
			n -= k
			if n == 0 {
				continue
			}
		}
		if n > 0 {
			out = append(out, buf[:n]...)
			if len(out) > maxTail {
				out = out[len(out)-maxTail:]
			}
			continue
		}
		if err == syscall.EINTR {
			continue
		}
		return out
	}
}

// pipeConn joins the two pipes of a worker into one stream.
type pipeConn struct {
	r    *os.File
	w    *os.File
	once sync.Once
	// over, when set (the watchdog's groups), checks the worker's memory
	// limit before its output is passed on: a worker found over it is
	// killed and what it wrote dropped.
	over   func() bool
	killed atomic.Bool
}

func (c *pipeConn) Read(b []byte) (int, error) {
	if c.killed.Load() {
		return 0, io.EOF
	}
	n, err := c.r.Read(b)
	if n > 0 && c.over != nil && c.over() {
		c.killed.Store(true)
		return 0, io.EOF
	}
	return n, err
}
func (c *pipeConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *pipeConn) Close() error {
	c.once.Do(func() {
		c.w.Close()
		c.r.Close()
	})
	return nil
}

// newPipeConn is the stream of a worker's task and result pipes; a
// group of the watchdog with a limit checks it before each result.
func newPipeConn(r, w *os.File, group sysres.Group, limit int64) *pipeConn {
	c := &pipeConn{r: r, w: w}
	if e, ok := group.(sysres.Enforcer); ok && limit > 0 {
		c.over = e.Enforce
	}
	return c
}

// setPipeSize sets a pipe's capacity (fcntl F_SETPIPE_SZ, Linux).
func setPipeSize(fd uintptr, size int) {
	const fSetPipeSz = 1031
	syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSz, uintptr(size))
}

// socketPair returns the two ends of a Unix stream socket: the first for
// reading, the second for writing.
func socketPair() (*os.File, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	syscall.Shutdown(fds[0], syscall.SHUT_WR)
	syscall.Shutdown(fds[1], syscall.SHUT_RD)
	// A large send buffer, so that a program printing many small lines
	// before the worker reads them (Go's GODEBUG=inittrace, chatty package
	// initialisers) does not block: every small write costs a kernel
	// buffer of its own on a Unix socket. SO_SNDBUFFORCE needs
	// CAP_NET_ADMIN; otherwise the system's wmem_max caps SO_SNDBUF.
	const size = 8 << 20
	if syscall.SetsockoptInt(fds[1], syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, size) != nil {
		syscall.SetsockoptInt(fds[1], syscall.SOL_SOCKET, syscall.SO_SNDBUF, size)
	}
	return os.NewFile(uintptr(fds[0]), "meadowrun-log-r"), os.NewFile(uintptr(fds[1]), "meadowrun-log-w"), nil
}

// Describe implements driver.Describer: this machine, and what this
// host's workers hold of it.
func (h *Host) Describe(ctx context.Context) []driver.Machine {
	m := MachineOf("localhost", runtime.GOOS+"/"+runtime.GOARCH, h.cap, h.limiter.Kind())
	h.mu.Lock()
	m.Booked = driver.Resources{LogicalCPU: h.cpu, MemoryBytes: h.mem, GPUs: float64(len(h.gpuUsed))}
	h.mu.Unlock()
	ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	m.Containers, _ = h.EngineStatus(ectx)
	return []driver.Machine{m}
}

// MachineOf describes a machine of capacity c whose memory limits
// limiter enforces.
func MachineOf(name, platform string, c sysres.Capacity, limiter string) driver.Machine {
	m := driver.Machine{Name: name, Platform: platform, Limiter: limiter,
		Capacity: driver.Resources{LogicalCPU: c.LogicalCPU, MemoryBytes: c.MemoryBytes, GPUs: float64(len(c.GPUs)),
			Flags: c.Flags, EphemeralBytes: c.EphemeralStorageBytes}}
	for _, g := range c.GPUs {
		m.Capacity.GPUMemoryBytes = max(m.Capacity.GPUMemoryBytes, g.MemoryBytes)
		m.GPUNames = append(m.GPUNames, fmt.Sprintf("%s, %s", g.Name, driver.Bytes(g.MemoryBytes)))
	}
	return m
}

// lockGPU takes GPU id's machine-wide lock without waiting. free is false
// when another process holds it. Where no lock file can be had (an
// unwritable temporary directory), the GPU is free as far as this process
// knows, and lf is nil.
func (h *Host) lockGPU(id int) (lf *os.File, free bool) {
	dir := h.opts.GPULockDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "meadowrun-gpus")
	}
	if err := os.MkdirAll(dir, 0o777); err == nil {
		os.Chmod(dir, 0o777|os.ModeSticky) // shared by every user, as the GPUs are
	}
	name := fmt.Sprintf("index-%d", id)
	for _, g := range h.cap.GPUs {
		if g.Index == id && g.UUID != "" {
			name = g.UUID
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return nil, true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, !errors.Is(err, syscall.EWOULDBLOCK)
	}
	return f, true
}

// closeLock releases a GPU lock taken by lockGPU.
func closeLock(f *os.File) {
	if f != nil {
		f.Close()
	}
}
