package durable

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// A supervisor started by a test is this test binary re-executed: it runs
// its job with execCommand.
func TestMain(m *testing.M) {
	if IsSupervisor() {
		logs := filepath.Join(os.Getenv("XDG_STATE_HOME"), "meadowrun", "logs")
		os.Exit(Supervise(func(rec journal.Record) (Prepared, error) {
			if rec.Kind == driver.JobMap {
				return Prepared{LogDir: logs, Open: func(context.Context) (Exec, error) { return execMap(logs), nil }}, nil
			}
			return Prepared{LogDir: logs, Open: func(context.Context) (Exec, error) { return execCommand(logs), nil }}, nil
		}))
	}
	os.Exit(m.Run())
}

// execCommand runs a command job as a plain process, its output in a log
// file of logs: the least an Exec does.
func execCommand(logs string) Exec {
	return func(ctx context.Context, run *Run) error {
		rec := run.Job()
		if rec.Kind != driver.JobCommand || len(rec.Command) == 0 {
			return run.Fail("execCommand runs commands only", nil)
		}
		path := filepath.Join(logs, rec.ID+".log")
		log, err := os.Create(path)
		if err != nil {
			return run.Fail(err.Error(), nil)
		}
		defer log.Close()
		cmd := exec.Command(rec.Command[0], rec.Command[1:]...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return run.Fail(err.Error(), nil)
		}
		run.Started(func() { cmd.Process.Kill() }, path)
		err = cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		res := journal.Result{Task: 0, Attempt: 1}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			res.Err = &journal.Failure{Kind: "exit", Message: err.Error(), ExitCode: code}
		}
		run.Emit(res)
		if res.Err != nil {
			return run.Finish(driver.JobFailed, &code)
		}
		return run.Finish(driver.JobSucceeded, &code)
	}
}

// Environment of the supervisors running execMap.
const (
	// envExecutions names the file where execMap notes every task it
	// starts, one argument a line: the side effect that tells a task run
	// twice.
	envExecutions = "DURABLE_TEST_EXECUTIONS"
	// envGate names a file: tasks whose argument is envBlockFrom or more
	// wait until it exists.
	envGate      = "DURABLE_TEST_GATE"
	envBlockFrom = "DURABLE_TEST_BLOCK_FROM"
)

// execMap runs a map whose arguments are decimal numbers, one task at a
// time, in this process: each task notes its argument in the executions
// file, waits for the gate if its argument is envBlockFrom or more, and
// returns "ARG:N", N being the number of times the argument was run so far
// (by any supervisor). Its log has a line per task.
func execMap(logs string) Exec {
	return func(ctx context.Context, run *Run) error {
		rec := run.Job()
		path := filepath.Join(logs, fmt.Sprintf("%s.%d.log", rec.ID, rec.Resumed))
		os.MkdirAll(logs, 0o755)
		log, err := os.Create(path)
		if err != nil {
			return run.Fail(err.Error(), nil)
		}
		defer log.Close()
		run.Started(func() {}, path)
		blockFrom, _ := strconv.Atoi(os.Getenv(envBlockFrom))
		task := 0
		for a := range run.Args() {
			if err := ctx.Err(); err != nil {
				return run.Finish(driver.JobCancelled, nil)
			}
			arg := string(a.B)
			n, err := noteExecution(os.Getenv(envExecutions), arg)
			if err != nil {
				return run.Fail(err.Error(), nil)
			}
			fmt.Fprintf(log, "[task %d] run %d of argument %s\n", task, rec.Resumed, arg)
			if v, _ := strconv.Atoi(arg); v >= blockFrom {
				for {
					if _, err := os.Stat(os.Getenv(envGate)); err == nil {
						break
					}
					select {
					case <-ctx.Done():
						return run.Finish(driver.JobCancelled, nil)
					case <-time.After(5 * time.Millisecond):
					}
				}
			}
			run.Emit(journal.Result{Task: task, Attempt: 1, Value: fmt.Appendf(nil, "%s:%d", arg, n)})
			task++
		}
		return run.Finish(driver.JobSucceeded, nil)
	}
}

// noteExecution appends arg to the executions file and returns how many
// times the file has it.
func noteExecution(file, arg string) (int, error) {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintln(f, arg); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strings.Count("\n"+string(b), "\n"+arg+"\n"), nil
}
