package meadowrun

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/meadowrun-go/meadowrun/internal/agent"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/registry"
	"github.com/meadowrun-go/meadowrun/internal/worker"
)

var mainCalled atomic.Bool

// Main must be the first call in main (and in TestMain of tests that run
// work on the local host). In a worker process, that is when meadowrun
// re-executed this program to run tasks, it serves the registered
// functions and never returns; in a supervisor process, re-executed to
// run a detached job, it runs the job and never returns. Otherwise it
// returns at once.
func Main() {
	mainCalled.Store(true)
	if !worker.IsWorkerProcess() {
		if os.Getenv(agentproto.EnvDial) != "" {
			// A stream to the agent of a Kubernetes pod (see package
			// kubernetes).
			os.Exit(agent.RunDial())
		}
		if os.Getenv(agent.EnvAgent) != "" {
			// The agent of an SSH host, started by a client (see package ssh).
			os.Exit(agent.RunProcess())
		}
		if isSupervisorProcess() {
			// A supervisor of a detached job (see SubmitFunction).
			os.Exit(supervise())
		}
		return
	}
	os.Exit(worker.RunProcess(registry.Default))
}

// errNoMain is returned when a worker process tries to start work without
// having called Main: it would start workers recursively.
var errNoMain = errors.New("meadowrun: this process was started as a meadowrun worker, but main did not call meadowrun.Main() before starting work; call it first thing in main (or TestMain)")

func checkNotRecursive() error {
	if worker.IsWorkerProcess() && !mainCalled.Load() {
		return errNoMain
	}
	return nil
}

// ContextVariables decodes the context variables that RunCommand gave this
// process (see CommandOptions.ContextVariables) into v. It reports false
// when there are none.
func ContextVariables(v any) (bool, error) {
	s := os.Getenv(worker.EnvContextVariables)
	if s == "" {
		return false, nil
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return true, fmt.Errorf("meadowrun: decoding %s: %w", worker.EnvContextVariables, err)
	}
	return true, nil
}

// SetResult hands a result back from a command run by RunCommand: it
// writes b to the file named by MEADOWRUN_RESULT_FILE, and RunCommand
// returns it in JobCompletion.Result. Programs in other languages write
// that file themselves.
func SetResult(b []byte) error {
	p := os.Getenv(worker.EnvResultFile)
	if p == "" {
		return errors.New("meadowrun: SetResult: not running as a meadowrun command (MEADOWRUN_RESULT_FILE is not set)")
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return fmt.Errorf("meadowrun: SetResult: %w", err)
	}
	return nil
}
