package durable

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// A supervisor started by a test is this test binary re-executed: it runs
// its job with execCommand.
func TestMain(m *testing.M) {
	if IsSupervisor() {
		logs := filepath.Join(os.Getenv("XDG_STATE_HOME"), "meadowrun", "logs")
		os.Exit(Supervise(func(rec journal.Record) (Prepared, error) {
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
