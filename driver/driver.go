// Package driver defines the interface between meadowrun's coordinator and
// the places work runs (this machine, SSH hosts, cloud VMs, Kubernetes).
//
// A driver is thin: it admits, starts, watches and kills worker processes,
// and hands the coordinator a byte stream to each. Everything else
// (validation, the task table, dispatch, retries, results, logs,
// cancellation, warm-worker pooling) is written once above it. Every driver
// must pass the conformance suite in package hosttest.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Errors a driver returns, classified so the coordinator knows whether
// waiting or retrying can help.
var (
	// ErrNoCapacity means the worker does not fit now but would fit once
	// other workers of this host stop. The coordinator waits and retries.
	ErrNoCapacity = errors.New("driver: no capacity now")
	// ErrNeverFits means the request exceeds what the host can ever offer.
	// The error message says what the host has.
	ErrNeverFits = errors.New("can never fit")
	// ErrUnsupported means the host cannot honour a requested feature
	// (sidecars, ports, a deployment kind). It is never silently ignored.
	ErrUnsupported = errors.New("not supported by this host")
	// ErrUnreachable means a machine could not be reached or was lost.
	ErrUnreachable = errors.New("machine unreachable")
	// ErrAuth means a machine refused the user or every key offered.
	ErrAuth = errors.New("authentication refused")
	// ErrHostKey means a machine's host key is unknown or has changed.
	ErrHostKey = errors.New("host key not trusted")
	// ErrPlatform means no binary can be had for a machine's operating
	// system and architecture.
	ErrPlatform = errors.New("no binary for the machine's platform")
	// ErrDiskFull means a machine has no space left for the deployment.
	ErrDiskFull = errors.New("no space left on the machine")
	// ErrNoEngine means a machine has no container engine that answers.
	ErrNoEngine = errors.New("no container engine")
	// ErrImageNotFound means a registry has no such container image
	// (repository, tag or digest).
	ErrImageNotFound = errors.New("container image not found")
	// ErrRegistryAuth means a container registry refused the credentials,
	// or needs some and none were given.
	ErrRegistryAuth = errors.New("container registry refused the credentials")
	// ErrPortInUse means a port a job asked for is taken on the machine
	// by something other than the job's own workers.
	ErrPortInUse = errors.New("port in use")
	// ErrSidecarExited means a sidecar container stopped right after it
	// started, or while its worker ran (ExitStatus.Cause).
	ErrSidecarExited = errors.New("sidecar container exited")
)

// Resources are what one worker needs, in the units hosts work with.
type Resources struct {
	LogicalCPU      float64
	MemoryBytes     int64 // 0: no limit requested
	GPUs            float64
	GPUMemoryBytes  int64
	Flags           []string
	EphemeralBytes  int64
	MaxEvictionRate float64 // percent; hosts without eviction satisfy any value
}

// String renders r for error messages and pool keys.
func (r Resources) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cpu=%g mem=%s", r.LogicalCPU, Bytes(r.MemoryBytes))
	if r.GPUs > 0 {
		fmt.Fprintf(&b, " gpus=%g", r.GPUs)
	}
	if r.GPUMemoryBytes > 0 {
		fmt.Fprintf(&b, " gpu_mem=%s", Bytes(r.GPUMemoryBytes))
	}
	if len(r.Flags) > 0 {
		fmt.Fprintf(&b, " flags=%s", strings.Join(r.Flags, ","))
	}
	if r.EphemeralBytes > 0 {
		fmt.Fprintf(&b, " disk=%s", Bytes(r.EphemeralBytes))
	}
	return b.String()
}

// Bytes formats a byte count for people.
func Bytes(n int64) string {
	switch {
	case n == 0:
		return "0"
	case n >= 1<<30:
		return decimal(float64(n)/(1<<30)) + "GiB"
	case n >= 1<<20:
		return decimal(float64(n)/(1<<20)) + "MiB"
	}
	return fmt.Sprintf("%dB", n)
}

// decimal formats v with three significant digits, or as a whole number
// when it has more digits before the point: never in exponent form.
func decimal(v float64) string {
	prec := 0
	switch {
	case v < 10:
		prec = 2
	case v < 100:
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if prec > 0 {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// WorkerSpec says what worker to start.
type WorkerSpec struct {
	// Name identifies the worker in logs and errors, unique per host.
	Name string
	// Resources the worker must have; the host enforces them.
	Resources Resources
	// Env are environment variables of the deployment.
	Env map[string]string
	// Files are the deployment's files: paths relative to the caller's
	// working directory, where the worker finds them relative to its own.
	// Hosts on this machine have them already; remote hosts copy them.
	Files []string
	// Deployment says where the worker's code and environment come from.
	// The zero value is mirror_local: the caller's own program.
	Deployment Deployment
	// Runtime is the program that serves the worker protocol. The zero
	// value is RuntimeGo.
	Runtime Runtime
	// Ports are opened on the worker's machine for as long as the worker
	// runs, as "N" or "N-M". A host without Capabilities.Ports never
	// receives any.
	Ports []string
	// Sidecars are containers started before the worker, reachable from
	// it, and stopped after it. A host without Capabilities.Sidecars never
	// receives any.
	Sidecars []Container
}

// DeploymentKind names where a worker's code and environment come from.
type DeploymentKind string

// Deployment kinds. Every host supports DeployMirrorLocal; the others
// only where Capabilities.Deployments lists them.
const (
	// DeployMirrorLocal: the caller's own program, with WorkerSpec.Files.
	DeployMirrorLocal DeploymentKind = "mirror_local"
	// DeployContainer: a container image; the worker runs inside it.
	DeployContainer DeploymentKind = "container"
	// DeployGit: a git repository at a branch or commit.
	DeployGit DeploymentKind = "git"
	// DeployInterpreter: an interpreter already installed on the machine.
	DeployInterpreter DeploymentKind = "interpreter"
)

// Deployment says where a worker's code and environment come from. Only
// the fields of its Kind are set.
type Deployment struct {
	// Kind is the deployment's kind; "" means DeployMirrorLocal.
	Kind DeploymentKind
	// Image is the container image, "repository:tag" or
	// "repository@digest" (DeployContainer).
	Image string
	// Repo, Branch and Commit name the code (DeployGit).
	Repo, Branch, Commit string
	// Interpreter is the interpreter's path on the machine
	// (DeployInterpreter), or in the image (DeployContainer with
	// RuntimePython; "" means python3).
	Interpreter string
	// Environment is the Python environment to build on the machine
	// (DeployEnvironment).
	Environment *Environment
	// Credentials log in to Image's registry (DeployContainer); nil
	// means none.
	Credentials *Credentials
}

// Credentials are a username and password (for a container registry),
// resolved where the job was submitted. They are never logged or
// journaled: String hides the password, and encoding/json skips them.
type Credentials struct {
	Username string `json:"-"`
	Password string `json:"-"`
}

// String names the user, never the password.
func (c *Credentials) String() string {
	if c == nil {
		return "no credentials"
	}
	return fmt.Sprintf("credentials of %q", c.Username)
}

// KindOrDefault returns d.Kind, or DeployMirrorLocal when it is unset.
func (d Deployment) KindOrDefault() DeploymentKind {
	if d.Kind == "" {
		return DeployMirrorLocal
	}
	return d.Kind
}

// Runtime names the program that serves the worker protocol.
type Runtime string

// Worker runtimes. Every host supports RuntimeGo; the others only where
// Capabilities.Runtimes lists them.
const (
	// RuntimeGo: the user's Go program re-executed in worker mode
	// (meadowrun.Main). It runs registered Go functions and commands.
	RuntimeGo Runtime = "go"
	// RuntimePython: meadowrun's Python worker. It runs Python functions
	// named "package.module.function" and commands.
	RuntimePython Runtime = "python"
)

// Container is a container image started next to a worker (a sidecar).
// It shares the worker's network: the worker reaches it on localhost,
// and by Name when one is given.
type Container struct {
	// Name is a host name the worker can reach it by; "" means none.
	Name string
	// Image is "repository:tag" or "repository@digest".
	Image string
	// Env are the container's environment variables.
	Env map[string]string
	// Args replace the image's command when not empty.
	Args []string
	// Credentials log in to Image's registry; nil means none.
	Credentials *Credentials
}

// Capabilities declare what a host can do. The conformance suite and the
// coordinator consult them; a feature a host lacks is refused with
// ErrUnsupported, never ignored.
type Capabilities struct {
	// CapturesOutput: what user functions print to stdout and stderr is
	// captured and attributed to their task.
	CapturesOutput bool
	// ProcessExits: a worker that exits (os.Exit, a signal) is reported
	// with its exit code or signal.
	ProcessExits bool
	// MemoryLimits: Resources.MemoryBytes is enforced and OOM kills are
	// reported. A host without it is never asked for memory.
	MemoryLimits bool
	// Sidecars and Ports can be honoured.
	Sidecars, Ports bool
	// Deployments lists the deployment kinds the host supports besides
	// DeployMirrorLocal, which every host supports.
	Deployments []DeploymentKind
	// Runtimes lists the worker runtimes the host supports besides
	// RuntimeGo, which every host supports.
	Runtimes []Runtime
}

// CanDeploy reports whether the host supports deployments of kind k.
func (c Capabilities) CanDeploy(k DeploymentKind) bool {
	return k == "" || k == DeployMirrorLocal || slices.Contains(c.Deployments, k)
}

// CanRun reports whether the host supports workers of runtime rt.
func (c Capabilities) CanRun(rt Runtime) bool {
	return rt == "" || rt == RuntimeGo || slices.Contains(c.Runtimes, rt)
}

// ExitStatus describes how a worker ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the worker was killed by a signal
	// or its fate is unknown.
	Code int
	// Signal names the signal that killed the worker, if any.
	Signal string
	// OOMKilled is true when the memory limit killed the worker.
	OOMKilled bool
	// PeakMemoryBytes is the worker's peak memory use, 0 if unknown.
	PeakMemoryBytes int64
	// LimitBytes is the memory limit that applied, 0 if none.
	LimitBytes int64
	// Output is what the worker wrote to stdout or stderr that was not
	// forwarded before it died (for example a fatal runtime error).
	Output []byte
	// Lost is true when the worker's machine or connection disappeared and
	// nothing more is known.
	Lost bool
	// ResultLog is the worker's result log as it was when the worker
	// ended (docs/protocol.md, "Result log"); nil when it had none.
	ResultLog []byte
	// Cause, when set, is why the host ended the worker: for a sidecar
	// that stopped while the worker ran, an error wrapping
	// ErrSidecarExited. The task it was running fails with it.
	Cause error `json:"-"`
}

// ResultLogger is implemented by a Worker given a result log: memory
// shared with its host in which, once the coordinator has sent Hold, the
// worker keeps the results it has not yet written to its stream. Its
// ExitStatus then carries the log, so that nothing the worker held is lost
// with it.
type ResultLogger interface {
	// HasResultLog reports whether the worker has a result log.
	HasResultLog() bool
}

// Worker is a started worker process.
type Worker interface {
	// Name is the WorkerSpec name.
	Name() string
	// Machine names where the worker runs (a host name, "localhost").
	Machine() string
	// Conn is the protocol stream to the worker. Closing it asks the
	// worker to stop.
	Conn() io.ReadWriteCloser
	// Done is closed once the worker has exited and Exit is valid.
	Done() <-chan struct{}
	// Exit reports how the worker ended; valid after Done is closed.
	Exit() ExitStatus
	// Kill stops the worker and everything it started, at once. It does
	// not wait for Done.
	Kill() error
}

// Host is a driver: it starts workers.
type Host interface {
	// Name identifies the host in errors and logs.
	Name() string
	// Capabilities declares what the host can do.
	Capabilities() Capabilities
	// Fit reports how many workers needing r the host can run at once when
	// idle, or an error wrapping ErrNeverFits that says what the host has.
	Fit(ctx context.Context, r Resources) (int, error)
	// Start starts a worker. It must not block waiting for capacity: when
	// the worker does not fit now it returns an error wrapping
	// ErrNoCapacity, and the caller retries after a worker has exited.
	Start(ctx context.Context, spec WorkerSpec) (Worker, error)
	// Close releases the host. Workers still running are killed.
	Close() error
}

// Machine describes a machine of a host as its driver sees it now.
type Machine struct {
	// Name identifies the machine as errors and results name it.
	Name string
	// Err says why the machine cannot be used now; nil when it can.
	Err error
	// Platform is GOOS/GOARCH, when known.
	Platform string
	// Capacity is what the machine offers: LogicalCPU, MemoryBytes, GPUs,
	// Flags and EphemeralBytes (free disk).
	Capacity Resources
	// GPUNames describe its GPUs ("NVIDIA H100 80GB HBM3, 79.6GiB").
	GPUNames []string
	// Limiter says how memory limits are enforced there: "cgroup2",
	// "cgroup1" or "watchdog".
	Limiter string
	// Booked is what this process's workers hold there now.
	Booked Resources
	// Python is the version of the machine's python3 ("3.11.2"), "" when
	// it has none or the driver does not say.
	Python string
	// Containers names the machine's container engine ("docker 20.10.24")
	// when one answers; "" when none does or the driver does not say.
	Containers string
	// Labels are the machine's labels (a Kubernetes node's), nil when it
	// has none or the driver does not say.
	Labels map[string]string
}

// Describer is a Host that can describe its machines. Describe may
// connect to machines it has not reached yet.
type Describer interface {
	Describe(ctx context.Context) []Machine
}
