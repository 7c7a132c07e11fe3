package durable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Exec runs a journaled job's spec on its host: the API layer's part of
// running a job (options, the host, the coordinator), which this package
// cannot import. It starts the job, tells run how to cancel it and where
// its log is (Started), passes each final outcome to run (Emit), and
// ends with Finish or Fail, whose error it returns.
type Exec func(ctx context.Context, run *Run) error

// Runner runs one journaled job in this process (a supervisor, or the
// submitter itself for an in-process job) and journals its outcomes as
// they arrive.
type Runner struct {
	st   *journal.Store
	rec  journal.Record
	args iter.Seq[Arg]
	exec Exec
	// local, when set, also receives every outcome: the in-process handle.
	local *Queue

	// pending, when not nil, are the tasks a resumed job has left, in
	// order: the run's task i is the job's task pending[i]; done[t] is
	// set for each task t whose result was journaled before.
	pending []int
	done    []bool

	mu        sync.Mutex
	stopped   bool
	cancelJob func()
	cancelCtx context.CancelFunc
	logFile   string
}

// NewRunner returns the runner of job rec of st, journaled already, with
// a map's encoded arguments args, run by exec. local, if not nil, also
// receives every outcome.
func NewRunner(st *journal.Store, rec journal.Record, args iter.Seq[Arg], exec Exec, local *Queue) *Runner {
	return &Runner{st: st, rec: rec, args: args, exec: exec, local: local}
}

// Local returns the queue the runner hands its outcomes to, or nil.
func (r *Runner) Local() *Queue { return r.local }

// Record returns the job's record as the runner knows it.
func (r *Runner) Record() journal.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.rec
	rec.LogFile = r.logFile
	return rec
}

// Stop cancels the job: at once if it has started, as soon as it starts
// otherwise.
func (r *Runner) Stop() {
	r.mu.Lock()
	r.stopped = true
	c, cc := r.cancelJob, r.cancelCtx
	r.mu.Unlock()
	// The run's context first: the job's outcome, which the cancel may
	// bring at once, must find the job cancelled.
	if cc != nil {
		cc()
	}
	if c != nil {
		c()
	}
}

func (r *Runner) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// Run runs the job until it ends, or until ctx ends (which cancels it),
// with its output and the recorder's warnings written to out (nil:
// standard error), and returns a *JournalError if journaling failed.
func (r *Runner) Run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	r.cancelCtx = cancel
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		cancel()
	}
	if out == nil {
		out = os.Stderr
	}
	sw := &syncWriter{w: out}
	warn := func(err error) {
		fmt.Fprintf(sw, "[meadowrun] %v; the job goes on, and its outcomes are journaled once this is fixed\n", err)
	}
	// A supervisor has nobody to report to: it holds on to the outcomes
	// for an hour in case room is made; a caller hears of the failure.
	persist := time.Second
	if r.local == nil {
		persist = time.Hour
	}
	rc := NewRecorder(r.st, r.rec.ID, r.Stop, warn, persist)
	defer rc.Stop()
	go func() {
		<-ctx.Done()
		r.Stop()
	}()
	run := &Run{ctx: ctx, r: r, rc: rc, out: sw}
	if r.pending != nil && len(r.pending) == 0 {
		// Resumed with every result journaled: only the end is left to
		// record (failed if a task failed).
		return run.Finish(driver.JobSucceeded, nil)
	}
	return r.exec(ctx, run)
}

// Run is one run of a journaled job, as its Exec sees it.
type Run struct {
	ctx  context.Context
	r    *Runner
	rc   *Recorder
	out  io.Writer
	cost runCost // cost.go
}

// Job returns the job's record as journaled when the run began. For a
// resumed map, Total is the number of tasks left to run: the run's tasks
// are numbered from 0 as Args yields them, and Emit gives each result the
// job's own task number.
func (x *Run) Job() journal.Record {
	rec := x.r.rec
	if x.r.pending != nil && rec.Kind == driver.JobMap {
		rec.Total = len(x.r.pending)
	}
	return rec
}

// Output is where the job's output goes.
func (x *Run) Output() io.Writer { return x.out }

// Args returns a map's encoded arguments. When their number was not
// known, it is journaled once they have all been read.
func (x *Run) Args() iter.Seq[Arg] {
	total := x.r.rec.Total
	counted := 0
	return func(yield func(Arg) bool) {
		done := x.r.done
		for a := range x.r.args {
			i := counted
			counted++
			if i < len(done) && done[i] {
				continue // its result is journaled: it is not run again
			}
			if !yield(a) {
				return
			}
		}
		if total < 0 {
			n := counted
			x.rc.Mutate(func(rec *journal.Record) { rec.Total = n })
		}
	}
}

// Started records that the job has started: cancel stops it, and its
// output goes to logFile.
func (x *Run) Started(cancel func(), logFile string) {
	r := x.r
	r.mu.Lock()
	r.cancelJob, r.logFile = cancel, logFile
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		cancel()
	}
	x.rc.Mutate(func(rec *journal.Record) { rec.LogFile = logFile })
}

// Emit journals a task's final outcome.
func (x *Run) Emit(res journal.Result) {
	if p := x.r.pending; p != nil && res.Task >= 0 && res.Task < len(p) {
		res.Task = p[res.Task]
	}
	if x.r.local != nil {
		x.r.local.Push(res)
	}
	x.rc.Add(res)
	x.journalCost()
}

// Finish records the job's end in state (cancelled instead, unless it
// succeeded, when it was cancelled), with a command's exit code, and
// returns once it is journaled, with a *JournalError if it could not be.
func (x *Run) Finish(state driver.JobState, exit *int) error {
	return x.end(state, "", exit)
}

// Fail records that the job failed as a whole, for the reason msg (f
// describes it as a result of task -1; nil: msg).
func (x *Run) Fail(msg string, f *journal.Failure) error {
	if f == nil {
		f = &journal.Failure{Message: msg}
	}
	x.Emit(journal.Result{Task: -1, Err: f})
	return x.end(driver.JobFailed, msg, nil)
}

func (x *Run) end(state driver.JobState, msg string, exit *int) error {
	if x.r.local != nil {
		x.r.local.Close()
	}
	cost, tracked := x.costNow()
	err := x.rc.Close(func(rec *journal.Record) {
		if tracked {
			rec.CostUSD = cost
		}
		rec.State = state
		if state == driver.JobSucceeded && rec.Failed > 0 {
			// A resumed job whose earlier run saw a task fail.
			rec.State = driver.JobFailed
		}
		if rec.CancelRequested || ((x.ctx.Err() != nil || x.r.isStopped()) && state != driver.JobSucceeded) {
			rec.State = driver.JobCancelled
		}
		rec.Finished = time.Now()
		if _, err := os.Stat(rec.LogFile); rec.LogFile != "" && errors.Is(err, fs.ErrNotExist) {
			// The job printed nothing: no result names a log that does
			// not exist.
			rec.LogFile = ""
		}
		if msg != "" && rec.Error == "" {
			rec.Error = msg
		}
		if exit != nil {
			rec.ExitCode = exit
		}
	})
	if err != nil {
		return &JournalError{Err: err}
	}
	return nil
}

// JournalError is returned with the results of a job that ran, when its
// outcomes could not all be journaled (for example the disk is full): the
// caller has the results, but other processes may not see them. The
// journal itself is left intact.
type JournalError struct{ Err error }

// Error describes the failure; the journal error is wrapped.
func (e *JournalError) Error() string {
	return fmt.Sprintf("meadowrun: the job ran, but its outcome could not be journaled: %v", e.Err)
}

// Unwrap returns the journal's error.
func (e *JournalError) Unwrap() error { return e.Err }

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// ArgsOf reads a map's arguments from the journal, a chunk at a time.
// Reads are not cut short when the job is cancelled (ctx's values are
// kept, not its cancellation): a cancelled read would pass for an
// argument that failed to encode, and the feeder tells a job stopped
// early by reading on.
func ArgsOf(ctx context.Context, st *journal.Store, id string) iter.Seq[Arg] {
	const chunk = 4096
	ctx = context.WithoutCancel(ctx)
	return func(yield func(Arg) bool) {
		for i := 0; ; {
			args, err := st.Args(ctx, id, i, chunk)
			if err != nil {
				yield(Arg{Err: fmt.Errorf("reading the argument from the journal: %w", err)})
				return
			}
			for _, a := range args {
				if !yield(Arg{B: a}) {
					return
				}
			}
			if len(args) < chunk {
				return
			}
			i += len(args)
		}
	}
}
