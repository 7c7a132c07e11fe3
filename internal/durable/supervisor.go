package durable

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
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
	// EnvSuperviseSubmission, when set, names a file holding the job's
	// driver.JobSubmission (JSON): the supervisor is started, and
	// restarted, by a controller (a Kubernetes Job) rather than by a
	// submitter. It journals the submission if the journal lacks the job,
	// has no ack pipe, and takes a SIGTERM or SIGINT that comes without a
	// cancel request in the journal as a shutdown: it exits (status 143)
	// once what it holds is journaled, leaving the job to the next
	// supervisor, which resumes it.
	EnvSuperviseSubmission = "MEADOWRUN_SUPERVISE_SUBMISSION"
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

// IsSupervisor reports whether this process was started to supervise a
// job.
func IsSupervisor() bool { return os.Getenv(EnvSupervise) != "" }

// Prepared is a job that a supervisor took, as the API layer readied it.
type Prepared struct {
	// LogDir is the directory of the supervisor's own log.
	LogDir string
	// Open opens the job's host and returns how to run the job there.
	Open func(ctx context.Context) (Exec, error)
}

// Supervise is the main of a supervisor process; it returns the exit
// code. It takes the job its environment names from the journal (the job
// is then running, in this process), has prepare decode the job's
// options (an error is the submitter's, which waits for the answer),
// tells the submitter it has taken the job, and runs it until it ends or
// the process is signalled (a cancel sends SIGTERM), journaling every
// outcome.
func Supervise(prepare func(rec journal.Record) (Prepared, error)) int {
	id, dir, subFile := os.Getenv(EnvSupervise), os.Getenv(EnvSuperviseState), os.Getenv(EnvSuperviseSubmission)
	// Nothing this process starts is a supervisor.
	os.Unsetenv(EnvSupervise)
	os.Unsetenv(EnvSuperviseState)
	os.Unsetenv(EnvSuperviseSubmission)
	var ack *os.File
	if subFile == "" {
		ack = os.NewFile(AckFD, "meadowrun-ack")
		syscall.CloseOnExec(AckFD)
	}
	nack := func(err error) int {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		if ack != nil {
			fmt.Fprintf(ack, "%s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			ack.Close()
		}
		return 1
	}
	if id == "" || dir == "" {
		return nack(errors.New("meadowrun: supervisor started without its job id or state directory"))
	}
	st := journal.New(dir, journal.Options{})
	// Cancel (from any process) sends SIGTERM; so does a shutdown.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	go func() {
		<-sigs
		if subFile != "" {
			if r, err := st.Get(context.Background(), id); err == nil && !r.CancelRequested && !r.Final() {
				// A shutdown (the pod deleted, its node drained): the
				// results received so far are journaled by the
				// recorder, within its commit gap, and the job is left
				// to the next supervisor.
				fmt.Fprintf(os.Stderr, "meadowrun: job %s: supervisor shut down; the job resumes in the next one\n", id)
				time.Sleep(3 * commitGap)
				os.Exit(143)
			}
		}
		stop()
	}()
	if subFile != "" {
		if err := journalSubmission(ctx, st, id, subFile); err != nil {
			return nack(err)
		}
	}
	// A job whose supervisor died is resumed (see takeJob).
	resume := false
	rec, err := st.Commit(ctx, id, nil, func(r *journal.Record) error {
		resume = false
		return takeJob(r, &resume)
	})
	if errors.Is(err, errNothingToDo) || err == nil && rec.State == driver.JobCancelled {
		if err == nil {
			err = fmt.Errorf("%w: job %s was cancelled while its supervisor was down", errNothingToDo, id)
		}
		nack(err)
		return 0
	}
	if err != nil {
		return nack(err)
	}
	p, err := prepare(rec)
	if err != nil {
		err = fmt.Errorf("meadowrun: job %s: %w", id, err)
		st.Commit(ctx, id, nil, func(r *journal.Record) error {
			r.State, r.Error, r.Finished = driver.JobFailed, err.Error(), time.Now()
			return nil
		})
		return nack(err)
	}
	if ack != nil {
		fmt.Fprintln(ack, "ok")
		ack.Close()
	}
	exec, err := p.Open(ctx)
	if err != nil {
		err = fmt.Errorf("meadowrun: job %s: %w", id, err)
		f := &journal.Failure{Message: err.Error(), Canceled: errors.Is(err, context.Canceled)}
		st.Commit(ctx, id, []journal.Result{{Task: -1, Err: f}}, func(r *journal.Record) error {
			r.State, r.Error, r.Finished = driver.JobFailed, err.Error(), time.Now()
			return nil
		})
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var args iter.Seq[Arg]
	if rec.Kind == driver.JobMap {
		args = ArgsOf(ctx, st, id)
	}
	runner := NewRunner(st, rec, args, exec, nil)
	if resume {
		if err := runner.resumeFrom(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := runner.Run(ctx, io.Discard); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The supervisor's own log is kept only when it says something.
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
		os.Remove(filepath.Join(p.LogDir, id+".supervisor.log"))
	}
	return 0
}
