package driver

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// JobKind says what a durable job runs.
type JobKind string

// Kinds of durable jobs.
const (
	JobFunction JobKind = "function" // one call of a registered function
	JobCommand  JobKind = "command"  // one command
	JobMap      JobKind = "map"      // a function over many arguments
)

// JobState is the state of a durable job.
type JobState string

// States of a durable job. A job is submitted, then running, then ends in
// one of the final states. Lost is never recorded: it is what a running
// job whose supervisor died is seen as.
const (
	// JobSubmitted: journaled, its supervisor is starting.
	JobSubmitted JobState = "submitted"
	// JobRunning: its tasks run.
	JobRunning JobState = "running"
	// JobSucceeded: every task succeeded.
	JobSucceeded JobState = "succeeded"
	// JobFailed: a task, or the job as a whole, failed.
	JobFailed JobState = "failed"
	// JobCancelled: cancelled before it ended.
	JobCancelled JobState = "cancelled"
	// JobLost: the process running it died before it ended.
	JobLost JobState = "lost"
)

// Final reports whether the state can no longer change.
func (s JobState) Final() bool { return s != JobSubmitted && s != JobRunning }

// Errors of job keepers.
var (
	// ErrJobNotFound: no job with that id is kept there.
	ErrJobNotFound = errors.New("meadowrun: no such job")
	// ErrJobFinished: the job has already finished (cancelling a finished
	// job).
	ErrJobFinished = errors.New("meadowrun: job already finished")
)

// JobFunc names a registered function: the worker protocol's function
// descriptor.
type JobFunc struct {
	Name   string `json:"name"`
	Arg    string `json:"arg"`
	Result string `json:"result"`
	Codec  string `json:"codec"`
}

// Job describes one durable job as its keeper records it: what it runs,
// what a supervisor needs to run it, and how far it got. It is stored as
// JSON with these field names.
type Job struct {
	ID       string   `json:"id"`
	Kind     JobKind  `json:"kind"`
	State    JobState `json:"state"`
	Host     string   `json:"host,omitempty"` // the URL of the host it runs on
	Command  []string `json:"command,omitempty"`
	Function *JobFunc `json:"function,omitempty"`
	// Detached: a supervisor process runs the job; otherwise the process
	// that submitted it does.
	Detached bool `json:"detached,omitempty"`
	// PID and Proc identify the process running the job.
	PID  int    `json:"pid,omitempty"`
	Proc string `json:"proc,omitempty"`

	Submitted time.Time `json:"submitted"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`

	// Total is the number of tasks, -1 while unknown. Done and Failed
	// count the tasks whose final result is recorded.
	Total  int `json:"total"`
	Done   int `json:"done"`
	Failed int `json:"failed"`

	// ExitCode is a command's exit code, once known.
	ExitCode *int `json:"exit_code,omitempty"`
	// Error is why the job as a whole failed, if it did.
	Error string `json:"error,omitempty"`
	// LogFile keeps the job's output, on the machine that runs it.
	LogFile string `json:"log_file,omitempty"`
	// Resumed counts the times a new supervisor took the job over from
	// one that died before the job ended, running only the tasks with no
	// recorded result; EarlierLogs are the logs of the runs before,
	// oldest first (JobLog reads them, then LogFile, as one log).
	Resumed     int      `json:"resumed,omitempty"`
	EarlierLogs []string `json:"earlier_logs,omitempty"`
	// CancelRequested is set by a cancel from any process; the process
	// running the job stops it and records the state cancelled.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Spec is what the process running the job needs (options,
	// resources), opaque to keepers.
	Spec json.RawMessage `json:"spec,omitempty"`
	// Machine, when set, is the machine of the host whose keeper keeps
	// the job: this record is then the submitting side's copy.
	Machine string `json:"machine,omitempty"`
	// Parts, when set, are the parts of a map split across machines of
	// the host: each is a job of its own kept on its machine.
	Parts []JobPart `json:"parts,omitempty"`
	// CostUSD is what the job's workers have cost, in US dollars, as the
	// process running it last journaled (with each batch of results, and
	// at its end); 0 on hosts that price nothing.
	CostUSD float64 `json:"cost_usd,omitempty"`
}

// Final reports whether the job's state can no longer change.
func (j Job) Final() bool {
	switch j.State {
	case JobSucceeded, JobFailed, JobCancelled:
		return true
	}
	return false
}

// JobPart is one machine's share of a map split across machines: the
// tasks dealt to it in proportion to Weight, kept as job ID on Machine.
type JobPart struct {
	Machine string `json:"machine"`
	ID      string `json:"id"`
	Weight  int    `json:"weight"`
}

// JobFailure describes a failed task, or (Kind "") a failure of the job as
// a whole that the task shared.
type JobFailure struct {
	Kind            string `json:"kind,omitempty"`
	Type            string `json:"type,omitempty"`
	Message         string `json:"message"`
	Stack           string `json:"stack,omitempty"`
	ExitCode        int    `json:"exit_code,omitempty"`
	Signal          string `json:"signal,omitempty"`
	PeakMemoryBytes int64  `json:"peak_memory_bytes,omitempty"`
	LimitBytes      int64  `json:"limit_bytes,omitempty"`
	// Canceled: the job was cancelled (Kind "").
	Canceled bool `json:"canceled,omitempty"`
}

// JobResult is the final outcome of one task. Task -1 is a result of the
// job as a whole: why it stopped before every argument became a task.
type JobResult struct {
	Task    int         `json:"task"`
	Attempt int         `json:"attempt,omitempty"`
	Value   []byte      `json:"value,omitempty"`
	Err     *JobFailure `json:"err,omitempty"`
	Worker  string      `json:"worker,omitempty"`
	Machine string      `json:"machine,omitempty"`
	Nanos   int64       `json:"nanos,omitempty"`
	Peak    int64       `json:"peak,omitempty"`
	// Cost is the task's share of the job's cost, in US dollars.
	Cost float64 `json:"cost,omitempty"`
}

// JobSubmission is a durable job to journal and start: its record, a
// map's encoded arguments, and the deployment's files.
type JobSubmission struct {
	Job  Job
	Args [][]byte
	// Files are the deployment's files, paths relative to Dir: the
	// supervisor runs in a directory that holds them at the same paths.
	Files []string
	// Dir is where Files are, on the submitting side; "" means the
	// working directory.
	Dir string
}

// JobStatus is what a keeper answers about a job.
type JobStatus struct {
	// Job is the job's record where it is kept.
	Job Job
	// Lost: the process running the job died before it ended.
	Lost bool
	// Results, when asked for, are those journaled after the cursor
	// given; Cursor is the cursor to give next time.
	Results []JobResult
	Cursor  uint64
	// Log, when asked for, is up to MaxJobLog bytes of the job's log from
	// the offset given; fewer mean the end of the log so far.
	Log []byte
}

// MaxJobLog is the most log bytes one JobLog call returns.
const MaxJobLog = 1 << 20

// JobKeeper is implemented by a Host whose machines keep durable jobs
// themselves (Nomad's task lifecycle: submit, inspect, follow, cancel,
// recover). A job submitted through it runs under a supervisor on a
// machine of the host and outlives the submitting process; any process
// that reopens the host (from its URL) can inspect the job, follow its
// results and log, and cancel it: that is how a handle recovers after its
// process restarts. Machines are named as the host names them (Machine.Name).
// Hosts that are this machine need not implement it: the jobs of this
// machine are kept in its own journal by a JobKeeper of the durable layer,
// through which they are followed like any other.
type JobKeeper interface {
	// SubmitJob journals sub.Job on machine, or when machine is "" on the
	// first machine of the host that can be reached, starts its
	// supervisor there, and returns the machine.
	SubmitJob(ctx context.Context, machine string, sub JobSubmission) (string, error)
	// InspectJob returns job id's record on machine and, with results,
	// the results journaled after cursor after (0: from the start). An
	// unknown id is an error wrapping ErrJobNotFound.
	InspectJob(ctx context.Context, machine, id string, results bool, after uint64) (JobStatus, error)
	// JobLog returns job id's record and up to MaxJobLog bytes of its log
	// from offset.
	JobLog(ctx context.Context, machine, id string, offset int64) (JobStatus, error)
	// CancelJob cancels job id and returns its record once it has stopped
	// (within about 15 s). A job that already ended is an error wrapping
	// ErrJobFinished.
	CancelJob(ctx context.Context, machine, id string) (JobStatus, error)
	// Closed reports whether the host was closed: handles then reopen it
	// from its URL.
	Closed() bool
}
