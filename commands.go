package meadowrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/meadowrun-go/meadowrun/internal/durable"
	"github.com/meadowrun-go/meadowrun/internal/worker"
)

// CommandTask is one command of a map of commands: the argument of
// Commands.
type CommandTask struct {
	// Args is the command and its arguments (no shell).
	Args []string `json:"args"`
	// Env adds environment variables to the command.
	Env map[string]string `json:"env,omitempty"`
	// Dir is the command's working directory; "" means the worker's.
	Dir string `json:"dir,omitempty"`
}

// CommandResult is the outcome of a CommandTask that exited 0.
type CommandResult struct {
	ExitCode int `json:"exit_code"`
}

// CommandExitError is the error of a CommandTask that did not exit 0. In
// a TaskError it is reported by its message; CommandExitCode reads the
// code back.
type CommandExitError struct {
	// Code is the exit code: 127 when the command was not found, 128+n
	// when signal n killed it.
	Code int
	// Signal names the signal that killed the command, if any.
	Signal string
	// NotFound is true when the command does not exist.
	NotFound bool
	// Command is the command's name.
	Command string
}

// Error names the command and its exit code.
func (e *CommandExitError) Error() string {
	switch {
	case e.NotFound:
		return fmt.Sprintf("command not found: %s (exit code %d)", e.Command, e.Code)
	case e.Signal != "":
		return fmt.Sprintf("%s was killed by %s (exit code %d)", e.Command, e.Signal, e.Code)
	}
	return fmt.Sprintf("%s: exit code %d", e.Command, e.Code)
}

var exitCodeRE = regexp.MustCompile(`exit code (\d+)`)

// commandErrorType is how a CommandExitError is named in a TaskError.
const commandErrorType = "*meadowrun.CommandExitError"

// CommandExitCode returns the exit code of a failed CommandTask from the
// error of its TaskResult.
func CommandExitCode(err error) (int, bool) {
	var ce *CommandExitError
	if errors.As(err, &ce) {
		return ce.Code, true
	}
	var te *TaskError
	if !errors.As(err, &te) || te.Type != commandErrorType {
		return 0, false
	}
	m := exitCodeRE.FindStringSubmatch(te.Message)
	if m == nil {
		return 0, false
	}
	code, err := strconv.Atoi(m[1])
	return code, err == nil
}

// Commands runs a command in a worker: map it over CommandTasks to run
// many commands, as `meadowrun map` does. The command's stdout and stderr
// are the worker's own, so its output is attributed to its task without a
// copy, and each task costs one fork and exec. A command that exits
// non-zero fails its task with a *CommandExitError (retried per
// MapOptions.MaxAttempts).
var Commands = Register("meadowrun.Command", runCommandTask)

// commandEnv is the environment commands inherit: the worker's, without
// the variables that make a process a meadowrun worker.
var commandEnv = sync.OnceValue(func() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, worker.EnvWorkerPrefix) && !strings.HasPrefix(kv, durable.EnvSupervise) {
			env = append(env, kv)
		}
	}
	return env
})

// devNull is the commands' standard input.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

func runCommandTask(ctx context.Context, t CommandTask) (CommandResult, error) {
	if len(t.Args) == 0 || t.Args[0] == "" {
		return CommandResult{}, errors.New("meadowrun: empty command")
	}
	cmd := exec.CommandContext(ctx, t.Args[0], t.Args[1:]...)
	// Clipped, the shared environment is copied before anything is added.
	cmd.Env = slices.Clip(commandEnv())
	for k, v := range t.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Dir = t.Dir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if f, err := devNull(); err == nil {
		cmd.Stdin = f // opened once, not once per command
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return CommandResult{}, nil
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(os.Stderr, "meadowrun: command not found: %s\n", t.Args[0])
		return CommandResult{}, &CommandExitError{Code: 127, NotFound: true, Command: t.Args[0]}
	case errors.Is(err, os.ErrPermission):
		fmt.Fprintf(os.Stderr, "meadowrun: permission denied: %s\n", t.Args[0])
		return CommandResult{}, &CommandExitError{Code: 126, Command: t.Args[0]}
	case errors.As(err, &ee):
		ce := &CommandExitError{Code: ee.ExitCode(), Command: t.Args[0]}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ce.Signal, ce.Code = ws.Signal().String(), 128+int(ws.Signal())
		}
		return CommandResult{}, ce
	}
	return CommandResult{}, fmt.Errorf("meadowrun: running %s: %w", t.Args[0], err)
}
