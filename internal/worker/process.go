package worker

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/meadowrun-go/meadowrun/internal/buildid"
	"github.com/meadowrun-go/meadowrun/internal/registry"
	"github.com/meadowrun-go/meadowrun/internal/shm"
)

// Environment and file descriptors of a worker process. A host starts the
// worker binary with EnvWorker set to the protocol version, tasks readable
// on fd 3, results written to fd 4, and the read end of its own stdout and
// stderr pipe on fd 5; or, where they cannot be inherited, with
// EnvWorkerFDs naming where to receive them.
const (
	EnvWorker     = "MEADOWRUN_WORKER"
	EnvWorkerName = "MEADOWRUN_WORKER_NAME"
	FDTasks       = 3
	FDResults     = 4
	FDLog         = 5
	// EnvWorkerResultLog names the file descriptor of the worker's result
	// log (docs/protocol.md, "Result log"), when its host gave it one.
	EnvWorkerResultLog = "MEADOWRUN_WORKER_RESULT_LOG"
	// FDResultLog is where the local host puts the result log.
	FDResultLog = 6
)

// IsWorkerProcess reports whether this process was started as a worker.
func IsWorkerProcess() bool { return os.Getenv(EnvWorker) != "" }

// RunProcess serves reg over the worker file descriptors and returns the
// process exit code. When the coordinator goes away (end of stream), the
// worker kills the commands it started (its process group) and returns.
func RunProcess(reg *registry.Registry) int {
	digest, _ := buildid.Self()
	opts := Options{
		Name:          os.Getenv(EnvWorkerName),
		Registry:      reg,
		Digest:        digest,
		MeasureMemory: true,
		// The coordinator is gone: stop now, with everything started.
		OnDisconnect: func() { signalGroup(); os.Exit(0) },
	}
	fdTasks, fdResults, fdLog := FDTasks, FDResults, FDLog
	if path := os.Getenv(EnvWorkerFDs); path != "" {
		var err error
		if fdTasks, fdResults, fdLog, err = receiveFDs(path); err != nil {
			fmt.Fprintf(os.Stderr, "meadowrun: worker %s: %v\n", opts.Name, err)
			return 2
		}
	}
	// Commands the worker runs must not inherit the protocol pipes.
	for _, fd := range []int{fdTasks, fdResults, fdLog} {
		syscall.CloseOnExec(fd)
	}
	// Non-blocking, the protocol streams go through the runtime's poller:
	// a task that arrives wakes the reading goroutine on a thread that
	// then runs the task itself, instead of a thread blocked in read(2)
	// waking another to run it. (The host does not use its copies of
	// these ends, so the flag changes nothing for it.)
	syscall.SetNonblock(fdTasks, true)
	syscall.SetNonblock(fdResults, true)
	in := os.NewFile(uintptr(fdTasks), "meadowrun-tasks")
	out := os.NewFile(uintptr(fdResults), "meadowrun-results")
	if in == nil || out == nil {
		fmt.Fprintln(os.Stderr, "meadowrun: worker started without its protocol file descriptors")
		return 2
	}
	if v := os.Getenv(EnvWorkerResultLog); v != "" {
		if fd, err := strconv.Atoi(v); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
			if r, err := shm.Open(os.NewFile(uintptr(fd), "meadowrun-result-log")); err == nil {
				opts.ResultLog = shm.NewResultLog(r)
			}
		}
	}
	if err := syscall.SetNonblock(fdLog, true); err == nil {
		opts.LogPipe = os.NewFile(uintptr(fdLog), "meadowrun-log")
	}
	err := Serve(context.Background(), in, out, opts)
	// Whatever the worker started dies with it.
	signalGroup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "meadowrun: worker %s: %v\n", opts.Name, err)
		return 1
	}
	return 0
}

// signalGroup ends the worker: it removes the worker's temporary
// directory, then kills its process group.
func signalGroup() {
	if dir := os.Getenv(EnvWorkerTmpDir); dir != "" {
		os.RemoveAll(dir)
	}
	if pgid, err := syscall.Getpgid(0); err == nil && pgid == os.Getpid() {
		// The worker leads its process group: this kills the commands it
		// started, and the worker itself.
		syscall.Kill(-pgid, syscall.SIGKILL)
	}
}
