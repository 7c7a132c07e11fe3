package meadowrun

import (
	"errors"
	"fmt"
	"strings"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/coord"
)

// Sentinel errors, for errors.Is.
var (
	// ErrNeverFits: the requested Resources exceed what the host can ever
	// offer. The message says what the host has.
	ErrNeverFits = driver.ErrNeverFits
	// ErrUnknownFunction: the worker has no function registered under the
	// requested name.
	ErrUnknownFunction = coord.ErrUnknownFunction
	// ErrRegistryMismatch: the worker registered the name with other
	// argument or result types, or runs other code than expected.
	ErrRegistryMismatch = coord.ErrRegistryMismatch
	// ErrWorkerStart: a worker process did not start or did not speak the
	// protocol (typically: main does not call meadowrun.Main first).
	ErrWorkerStart = coord.ErrWorkerStart
	// ErrTaskFailed is matched by every *TaskError.
	ErrTaskFailed = errors.New("meadowrun: task failed")

	// Errors about machines, wrapped with the machine's name.

	// ErrUnreachable: a machine could not be reached, or was lost.
	ErrUnreachable = driver.ErrUnreachable
	// ErrAuth: a machine refused the user or every key offered.
	ErrAuth = driver.ErrAuth
	// ErrHostKey: a machine's host key is not in known_hosts, or differs
	// from the one there.
	ErrHostKey = driver.ErrHostKey
	// ErrPlatform: no program can be had for a machine's operating system
	// and architecture.
	ErrPlatform = driver.ErrPlatform
	// ErrDiskFull: a machine has no space left for the deployment.
	ErrDiskFull = driver.ErrDiskFull

	// Errors about containers.

	// ErrNoEngine: a machine has no container engine that answers; the
	// message says how to start one.
	ErrNoEngine = driver.ErrNoEngine
	// ErrImageNotFound: the registry has no such image, tag or digest.
	ErrImageNotFound = driver.ErrImageNotFound
	// ErrRegistryAuth: the registry refused the Secret's credentials, or
	// needs some.
	ErrRegistryAuth = driver.ErrRegistryAuth
	// ErrPortInUse: a port of Options.Ports is taken on the machine.
	ErrPortInUse = driver.ErrPortInUse
	// ErrSidecarExited: a sidecar stopped right after it started, or
	// (Kubernetes) while a task ran, which then fails with a *TaskError
	// that matches it; the message has its exit code and output.
	ErrSidecarExited = driver.ErrSidecarExited

	// Errors about Python environments.

	// ErrEnvironment: a Python environment cannot be built from its
	// specification (requirements pip cannot resolve, a conda file conda
	// refuses), which no other machine would change; the message quotes
	// pip or conda. A machine that lacks what an environment needs (its
	// Python version, conda) refuses it with ErrUnsupported instead, and
	// another machine may run it.
	ErrEnvironment = driver.ErrEnvironment
)

// ErrorKind classifies a task failure.
type ErrorKind int

// Failure classes of a task.
const (
	// KindError: the function returned an error.
	KindError = ErrorKind(coord.KindError)
	// KindPanic: the function panicked.
	KindPanic = ErrorKind(coord.KindPanic)
	// KindExit: the worker process exited while running the task (for
	// example os.Exit), or a command exited with a non-zero code.
	KindExit = ErrorKind(coord.KindExit)
	// KindCrash: the worker was killed by a signal or a fatal runtime
	// error while running the task.
	KindCrash = ErrorKind(coord.KindCrash)
	// KindOOM: the worker exceeded its memory limit and was killed.
	KindOOM = ErrorKind(coord.KindOOM)
	// KindLost: the worker or its machine disappeared; its fate is unknown.
	KindLost = ErrorKind(coord.KindLost)
	// KindEncoding: the argument or result could not be encoded or decoded.
	// Retrying cannot help.
	KindEncoding = ErrorKind(coord.KindEncoding)
	// KindUnknownFunction: the worker does not know the function.
	KindUnknownFunction = ErrorKind(coord.KindUnknownFunction)
	// KindCanceled: the task was cancelled.
	KindCanceled = ErrorKind(coord.KindCanceled)
)

// kindNames maps every kind to its name, to read names back.
var kindNames = func() map[ErrorKind]string {
	m := map[ErrorKind]string{}
	for k := KindError; k <= KindCanceled; k++ {
		m[k] = k.String()
	}
	return m
}()

// String names the kind: error, panic, exit, crash, oom, lost, encoding,
// unknown-function, canceled.
func (k ErrorKind) String() string { return coord.Kind(k).String() }

// Retryable reports whether another attempt could succeed.
func (k ErrorKind) Retryable() bool { return coord.Kind(k).Retryable() }

// TaskError is a task that failed: the Go form of the reference's
// TaskException. Remote errors keep their type, message and stack.
type TaskError struct {
	// TaskID is the task's index in the map's arguments (0 for a single
	// function or command).
	TaskID int
	// Attempt is the 1-based attempt that failed.
	Attempt int
	Kind    ErrorKind
	// Type, Message and Stack describe the remote error or panic.
	Type, Message, Stack string
	// ExitCode is the worker's or command's exit code (KindExit), Signal
	// the signal that killed it (KindCrash).
	ExitCode int
	Signal   string
	// PeakMemoryBytes is the peak memory seen for the attempt (0 if
	// unknown), LimitBytes the limit that applied (0 if none).
	PeakMemoryBytes, LimitBytes int64
	// Worker and Machine say where it ran; LogFile holds its output.
	Worker, Machine, LogFile string
}

func (e *TaskError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "meadowrun: task %d (attempt %d) failed: %s", e.TaskID, e.Attempt, e.Kind)
	if e.Type != "" && e.Type != e.Kind.String() {
		fmt.Fprintf(&b, " %s", e.Type)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.LogFile != "" {
		fmt.Fprintf(&b, " (log: %s)", e.LogFile)
	}
	return b.String()
}

// Is makes every TaskError match ErrTaskFailed, and a KindUnknownFunction
// error match ErrUnknownFunction.
func (e *TaskError) Is(target error) bool {
	switch target {
	case ErrTaskFailed:
		return true
	case ErrUnknownFunction:
		return e.Kind == KindUnknownFunction
	case ErrSidecarExited:
		return e.Type == coord.TypeSidecarExited
	}
	return false
}

// taskError is the public form of a failure the coordinator classified.
func taskError(f *coord.Failure) *TaskError {
	return &TaskError{TaskID: f.TaskID, Attempt: f.Attempt, Kind: ErrorKind(f.Kind), Type: f.Type, Message: f.Message,
		Stack: f.Stack, ExitCode: f.ExitCode, Signal: f.Signal, PeakMemoryBytes: f.PeakMemoryBytes,
		LimitBytes: f.LimitBytes, Worker: f.Worker, Machine: f.Machine, LogFile: f.LogFile}
}

// outcomeErr is the error of a coordinator outcome: its failure as a
// *TaskError, a job-level error, or nil.
func outcomeErr(o coord.Outcome) error {
	if o.Failure != nil {
		return taskError(o.Failure)
	}
	return o.Err
}

// MapError is returned by RunMap when some tasks still failed after all
// their attempts. The results of the other tasks are returned with it.
type MapError struct {
	// Failed lists each failed task's last attempt, by task id.
	Failed []*TaskError
	// Total is the number of tasks in the map.
	Total int
}

func (e *MapError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "meadowrun: %d of %d tasks failed", len(e.Failed), e.Total)
	for i, t := range e.Failed {
		if i == 10 {
			fmt.Fprintf(&b, "\n  ... and %d more", len(e.Failed)-10)
			break
		}
		fmt.Fprintf(&b, "\n  task %d, attempt %d: %s", t.TaskID, t.Attempt, t.Kind)
		if t.Message != "" {
			fmt.Fprintf(&b, ": %s", firstLine(t.Message))
		}
		if t.LogFile != "" {
			fmt.Fprintf(&b, " (log: %s)", t.LogFile)
		}
	}
	return b.String()
}

// Unwrap returns the task errors, for errors.Is and errors.As.
func (e *MapError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, t := range e.Failed {
		errs[i] = t
	}
	return errs
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
