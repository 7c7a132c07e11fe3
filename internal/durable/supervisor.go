package durable

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/journal"
	"github.com/meadowrun-go/meadowrun/internal/worker"
)

// A supervisor is this program re-executed with EnvSupervise set to a job
// id: Main recognises it, and the process runs that job, journaling every
// outcome, in a session of its own so that it outlives the submitter.
const (
	EnvSupervise      = "MEADOWRUN_SUPERVISE"
	EnvSuperviseState = "MEADOWRUN_SUPERVISE_STATE"
	// AckFD is the pipe on which the supervisor tells the
	// submitter it has taken the job.
	AckFD = 3
)

// superviseStartTimeout bounds how long a new supervisor may take to
// take its job.
const superviseStartTimeout = 60 * time.Second

// startSupervisor starts this program again as the supervisor of job id,
// in a new session so that it survives the caller, and waits until it has
// taken the job. env is added to this process's environment.
func startSupervisor(ctx context.Context, st *journal.Store, id, dir, logDir string, env ...string) error {
	ackR, ackW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("meadowrun: starting the supervisor of job %s: %w", id, err)
	}
	defer ackR.Close()
	// The supervisor's own errors (not the job's output) go to a file
	// next to the job's log.
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		ackW.Close()
		return fmt.Errorf("meadowrun: starting the supervisor of job %s: the log directory: %w", id, err)
	}
	errPath := filepath.Join(logDir, id+".supervisor.log")
	errFile, err := os.OpenFile(errPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		ackW.Close()
		return fmt.Errorf("meadowrun: starting the supervisor of job %s: %w", id, err)
	}
	defer errFile.Close()
	// /proc/self/exe is this very program even if its file was replaced
	// or removed since it started (go run removes it at exit).
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{os.Args[0]}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, worker.EnvWorkerPrefix) && !strings.HasPrefix(kv, EnvSupervise) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, EnvSupervise+"="+id, EnvSuperviseState+"="+st.Dir())
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = errFile, errFile
	cmd.ExtraFiles = []*os.File{ackW} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		ackW.Close()
		return fmt.Errorf("meadowrun: starting the supervisor of job %s: %w", id, err)
	}
	ackW.Close()
	go cmd.Wait() // reap it if it ends while this process lives
	type ack struct {
		line string
		err  error
	}
	got := make(chan ack, 1)
	go func() {
		line, err := bufio.NewReader(ackR).ReadString('\n')
		got <- ack{line, err}
	}()
	timer := time.NewTimer(superviseStartTimeout)
	defer timer.Stop()
	select {
	case <-timer.C:
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("meadowrun: the supervisor of job %s did not take the job within %s; does main call meadowrun.Main() before anything else?", id, superviseStartTimeout)
	case a := <-got:
		if strings.TrimSpace(a.line) == "ok" {
			return nil
		}
		out, _ := os.ReadFile(errPath)
		msg := strings.TrimSpace(a.line)
		if msg == "" {
			msg = "it exited before taking the job"
		}
		err := fmt.Errorf("meadowrun: the supervisor of job %s failed: %s", id, msg)
		if len(out) > 0 {
			err = fmt.Errorf("%w; its output ended with:\n%s", err, tail(out, 2000))
		}
		if !strings.Contains(msg, "meadowrun") {
			err = fmt.Errorf("%w\nThe supervisor is this program re-executed: does main call meadowrun.Main() before anything else?", err)
		}
		return err
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("meadowrun: waiting for the supervisor of job %s: %w", id, ctx.Err())
	}
}

// tail is the last n bytes of b, for error messages.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
