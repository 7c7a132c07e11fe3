package coord

import (
	"errors"
	"fmt"
)

// Sentinel errors of the coordinator. The root package re-exports them as
// the same values, so errors.Is works across the boundary.
var (
	// ErrUnknownFunction: the worker has no function registered under the
	// requested name.
	ErrUnknownFunction = errors.New("meadowrun: function not registered in the worker")
	// ErrRegistryMismatch: the worker registered the name with other
	// argument or result types, or runs other code than expected.
	ErrRegistryMismatch = errors.New("meadowrun: worker registry does not match the caller")
	// ErrWorkerStart: a worker process did not start or did not speak the
	// protocol.
	ErrWorkerStart = errors.New("meadowrun: worker did not start")
)

// TypeSidecarExited is the Type of a failure whose worker its host ended
// because a sidecar of the worker stopped (driver.ErrSidecarExited).
const TypeSidecarExited = "sidecar-exited"

// Kind classifies a task failure. The root package's ErrorKind has the
// same values, and documents each.
type Kind int

// Failure classes of a task, in the order of ErrorKind's.
const (
	KindError           Kind = iota + 1 // the function returned an error
	KindPanic                           // the function panicked
	KindExit                            // the worker or command exited
	KindCrash                           // a signal or fatal runtime error
	KindOOM                             // over its memory limit
	KindLost                            // the worker or its machine disappeared
	KindEncoding                        // an argument or result failed to encode or decode
	KindUnknownFunction                 // the worker does not know the function
	KindCanceled                        // the task was cancelled
)

var kindNames = map[Kind]string{
	KindError: "error", KindPanic: "panic", KindExit: "exit", KindCrash: "crash", KindOOM: "oom",
	KindLost: "lost", KindEncoding: "encoding", KindUnknownFunction: "unknown-function", KindCanceled: "canceled",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Retryable reports whether another attempt could succeed.
func (k Kind) Retryable() bool {
	switch k {
	case KindEncoding, KindUnknownFunction, KindCanceled:
		return false
	}
	return true
}

// Failure is a failed attempt of a task, as the coordinator classified
// it. It is not an error: the root package turns it into its *TaskError,
// field by field.
type Failure struct {
	// TaskID is the task's index in the job's arguments.
	TaskID int
	// Attempt is the 1-based attempt that failed.
	Attempt int
	Kind    Kind
	// Type, Message and Stack describe the remote error or panic.
	Type, Message, Stack string
	// ExitCode is the worker's exit code, Signal the signal that killed it.
	ExitCode int
	Signal   string
	// PeakMemoryBytes is the peak memory seen for the attempt (0 if
	// unknown), LimitBytes the limit that applied (0 if none).
	PeakMemoryBytes, LimitBytes int64
	// Worker and Machine say where it ran; LogFile holds its output.
	Worker, Machine, LogFile string
}
