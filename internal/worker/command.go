package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// Environment variables a command sees.
const (
	// EnvResultFile names a file the command may write its result to.
	EnvResultFile = "MEADOWRUN_RESULT_FILE"
	// EnvContextVariables holds the job's context variables as JSON.
	EnvContextVariables = "MEADOWRUN_CONTEXT_VARIABLES"
	// EnvWorkerPrefix starts every variable that puts a process in worker
	// mode; commands never inherit them.
	EnvWorkerPrefix = "MEADOWRUN_WORKER"
	// EnvWorkerTmpDir names a directory for the worker's temporary files,
	// which the process that started the worker removes once it exits;
	// unset, they go to the system's temporary directory.
	EnvWorkerTmpDir = "MEADOWRUN_WORKER_TMPDIR"
)

// runCommand runs a command task and reports its exit code and result.
// A command that cannot be started because it does not exist exits 127, as
// in a shell.
func (s *server) runCommand(ctx context.Context, t wire.Task) wire.Result {
	var c wire.Command
	if err := json.Unmarshal(t.Payload, &c); err != nil || len(c.Args) == 0 {
		msg := "empty command"
		if err != nil {
			msg = err.Error()
		}
		return failure(t.Key, wire.StatusBadInput, "bad-command", msg, "")
	}
	// A worker killed while the command runs (its job cancelled) leaves
	// the file to the worker's directory, which its starter removes.
	rf, err := os.CreateTemp(os.Getenv(EnvWorkerTmpDir), "meadowrun-result-*")
	if err != nil {
		return failure(t.Key, wire.StatusError, "result-file", fmt.Sprintf("creating the result file: %v", err), "")
	}
	rf.Close()
	defer os.Remove(rf.Name())

	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	cmd.Dir = c.Dir
	cmd.Env = commandEnv(os.Environ(), c, rf.Name())
	if s.pump != nil {
		// The process's stdout and stderr are the captured pipe: the
		// command writes to it directly, without a copy.
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	} else {
		lw := logWriter{w: s.w, key: t.Key}
		cmd.Stdout, cmd.Stderr = lw, lw
	}
	runErr := cmd.Run()
	var cr wire.CommandResult
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
	case errors.Is(runErr, exec.ErrNotFound) || errors.Is(runErr, os.ErrNotExist):
		cr.ExitCode, cr.NotFound = 127, true
		fmt.Fprintf(cmdStderr(cmd), "meadowrun: command not found: %s\n", c.Args[0])
	case errors.As(runErr, &exitErr):
		cr.ExitCode = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			cr.Signal = ws.Signal().String()
			cr.ExitCode = 128 + int(ws.Signal())
		}
	case errors.Is(runErr, os.ErrPermission):
		cr.ExitCode = 126
		fmt.Fprintf(cmdStderr(cmd), "meadowrun: permission denied: %s\n", c.Args[0])
	default:
		return failure(t.Key, wire.StatusError, "command", runErr.Error(), "")
	}
	if ctx.Err() != nil {
		return failure(t.Key, wire.StatusCanceled, "canceled", "the command was cancelled", "")
	}
	if b, err := os.ReadFile(rf.Name()); err == nil && len(b) > 0 {
		cr.Result = b
	}
	out, _ := json.Marshal(cr)
	return wire.Result{Key: t.Key, Payload: out}
}

func cmdStderr(cmd *exec.Cmd) io.Writer {
	if cmd.Stderr != nil {
		return cmd.Stderr
	}
	return io.Discard
}

func commandEnv(base []string, c wire.Command, resultFile string) []string {
	env := make([]string, 0, len(base)+len(c.Env)+2)
	for _, kv := range base {
		if !strings.HasPrefix(kv, EnvWorkerPrefix) {
			env = append(env, kv)
		}
	}
	for k, v := range c.Env {
		env = append(env, k+"="+v)
	}
	env = append(env, EnvResultFile+"="+resultFile)
	if len(c.ContextVariables) > 0 {
		env = append(env, EnvContextVariables+"="+string(c.ContextVariables))
	}
	return env
}
