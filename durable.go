package meadowrun

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/durable"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Errors of durable jobs, for errors.Is.
var (
	// ErrJobNotFound: no job with that id is in the journal.
	ErrJobNotFound = driver.ErrJobNotFound
	// ErrJobFinished: the job has already finished (cancel of a finished
	// job). Its results are kept.
	ErrJobFinished = driver.ErrJobFinished
	// ErrJobLost: the process running the job died before the job ended.
	// The results it journaled are kept.
	ErrJobLost = durable.ErrJobLost
)

// JobState is the state of a durable job: one type for the journal, job
// keepers and the API.
type JobState = driver.JobState

// States of a durable job.
const (
	// JobSubmitted: journaled, its supervisor is starting.
	JobSubmitted = driver.JobSubmitted
	// JobRunning: its tasks run.
	JobRunning = driver.JobRunning
	// JobSucceeded: every task succeeded.
	JobSucceeded = driver.JobSucceeded
	// JobFailed: a task, or the job as a whole, failed.
	JobFailed = driver.JobFailed
	// JobCancelled: cancelled before it ended.
	JobCancelled = driver.JobCancelled
	// JobLost: the process running it died before it ended.
	JobLost = driver.JobLost
)

// JobKind says what a durable job runs.
type JobKind = driver.JobKind

// Kinds of durable jobs.
const (
	// JobFunction: one call of a registered function.
	JobFunction = driver.JobFunction
	// JobCommand: one command.
	JobCommand = driver.JobCommand
	// JobMap: a function over many arguments.
	JobMap = driver.JobMap
)

// JobInfo describes a durable job, as the journal records it.
type JobInfo struct {
	// ID identifies the job in every process.
	ID string `json:"id"`
	// Kind is "function", "command" or "map".
	Kind  JobKind  `json:"kind"`
	State JobState `json:"state"`
	// Host is the URL of the host the job runs on (see OpenHost).
	Host string `json:"host"`
	// Command is the command of a command job, or of each task of a map
	// of commands.
	Command []string `json:"command,omitempty"`
	// Function is the registered name of the function that runs, and
	// ResultCodec how its results are encoded ("json", "bytes" or
	// "string").
	Function    string `json:"function,omitempty"`
	ResultCodec string `json:"result_codec,omitempty"`
	// Detached is true when a supervisor process runs the job; otherwise
	// the process that submitted it does, and the job ends with it.
	Detached bool `json:"detached"`
	// PID is the process running the job.
	PID int `json:"pid,omitempty"`

	Submitted time.Time `json:"submitted"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`

	// Tasks is the number of tasks, -1 while unknown; Done and Failed
	// count those that succeeded and failed (tasks stopped by a cancel
	// count as neither).
	Tasks  int `json:"tasks"`
	Done   int `json:"done"`
	Failed int `json:"failed"`
	// ExitCode is a command's exit code, -1 until it is known.
	ExitCode int `json:"exit_code"`
	// Resumed counts the times a new supervisor took the job over from
	// one that died before it ended (a Kubernetes host's supervisor pod
	// replaced), running only the tasks with no recorded result.
	Resumed int `json:"resumed,omitempty"`
	// Error says why the job failed as a whole, if it did.
	Error string `json:"error,omitempty"`
	// LogFile keeps the job's output, each line prefixed with its task.
	// For a job of an SSH host, it is a file of Machine; a map split
	// across machines has one per machine, and none here (JobLog reads
	// them all).
	LogFile string `json:"log_file,omitempty"`
	// Machine is, for a job of an SSH host, the machine whose agent keeps
	// it: its supervisor runs there, and its journal is that machine's.
	// For a map split across machines, it lists them, comma-separated.
	Machine string `json:"machine,omitempty"`
	// Parts describe, for a map split across machines, each machine's
	// part, as GetJob read it from the machine.
	Parts []PartInfo `json:"parts,omitempty"`
	// CostUSD is what the job's workers have cost, in US dollars, as the
	// process running it last journaled (with each batch of results, and
	// at its end); 0 on hosts that price nothing.
	CostUSD float64 `json:"cost_usd,omitempty"`
}

// PartInfo describes one machine's part of a map split across the
// machines of an SSH host: a job of its own in that machine's journal.
type PartInfo struct {
	Machine string   `json:"machine"`
	ID      string   `json:"id"`
	State   JobState `json:"state"`
	Tasks   int      `json:"tasks"`
	Done    int      `json:"done"`
	Failed  int      `json:"failed"`
	Error   string   `json:"error,omitempty"`
}

// Duration is how long the job ran, or has been running.
func (j JobInfo) Duration() time.Duration {
	switch {
	case j.Started.IsZero():
		return 0
	case j.Finished.IsZero():
		return time.Since(j.Started)
	}
	return j.Finished.Sub(j.Started)
}

func infoOf(r journal.Record) JobInfo {
	j := JobInfo{ID: r.ID, Kind: r.Kind, State: JobState(r.State), Host: r.Host, Command: r.Command, Detached: r.Detached,
		PID: r.PID, Submitted: r.Submitted, Started: r.Started, Finished: r.Finished, Tasks: r.Total,
		Done: r.Done, Failed: r.Failed, ExitCode: -1, Error: r.Error, LogFile: r.LogFile, Machine: r.Machine, Resumed: r.Resumed, CostUSD: r.CostUSD}
	if r.Function != nil && r.Kind != JobCommand {
		j.Function = r.Function.Name
		_, j.ResultCodec, _ = cutCodec(r.Function.Codec)
	}
	if r.ExitCode != nil {
		j.ExitCode = *r.ExitCode
	}
	if durable.IsLost(r) {
		j.State = JobLost
		if j.Error == "" {
			j.Error = fmt.Sprintf("the process running the job (pid %d) ended before the job did", r.PID)
		}
	}
	return j
}

// StateDir is where meadowrun keeps the journal of jobs and their logs:
// $XDG_STATE_HOME/meadowrun, or ~/.local/state/meadowrun.
func StateDir() string { return filepath.Dir(defaultLogDir()) }

func defaultStore() *journal.Store { return journal.New(StateDir(), journal.Options{}) }

// defaultJobs is the durable-job layer over this process's journal.
func defaultJobs() *durable.Jobs { return &durable.Jobs{Store: defaultStore(), OpenKeeper: openKeeper} }

// openKeeper opens the host of a job from its URL as a job keeper: nil if
// its driver keeps no jobs on its machines.
func openKeeper(ctx context.Context, url string) (driver.JobKeeper, error) {
	h, err := OpenHost(ctx, url)
	if err != nil {
		return nil, err
	}
	return h.keeper(ctx), nil
}

// infoFrom describes a job as its keepers report it.
func infoFrom(in durable.Info) JobInfo {
	j := infoOf(in.Job)
	if in.Lost != "" {
		j.State = JobLost
		j.Error = cmp.Or(j.Error, in.Lost)
	}
	for _, p := range in.Parts {
		pi := PartInfo{Machine: p.Machine, ID: p.ID, State: p.Job.State, Tasks: p.Job.Total, Done: p.Job.Done,
			Failed: p.Job.Failed, Error: p.Job.Error}
		if p.Lost != "" {
			pi.State, pi.Error = JobLost, cmp.Or(pi.Error, p.Lost)
		}
		j.Parts = append(j.Parts, pi)
	}
	return j
}

// openJob returns the handle of job id of this process's journal.
func openJob(ctx context.Context, id string) (*durable.Job, journal.Record, error) {
	js := defaultJobs()
	rec, err := js.Store.Get(ctx, id)
	if err != nil {
		return nil, rec, notFound(err, id)
	}
	h, err := js.Open(ctx, rec)
	return h, rec, err
}

func notFound(err error, id string) error {
	if errors.Is(err, journal.ErrNotFound) {
		return fmt.Errorf("%w: %q is not in the journal %s (meadowrun jobs lists the jobs)", ErrJobNotFound, id, filepath.Join(StateDir(), journal.FileName))
	}
	return fmt.Errorf("meadowrun: %w", err)
}

// SubmitOptions say who runs a submitted job. The zero value starts a
// supervisor process that outlives the caller.
type SubmitOptions struct {
	// MaxAttempts is how many times a command or function job is tried in
	// all, when it fails in a way another attempt could fix (a non-zero
	// exit, a crash, a lost worker). 0 means 1: no retry. Maps take
	// MapOptions.MaxAttempts instead.
	MaxAttempts int
	// InProcess runs the job in this process instead of a supervisor: it
	// is journaled like any durable job (listed, attachable, cancellable
	// from other processes) and its output also streams live to
	// Options.Output, but it ends with this process. The CLI runs its
	// jobs so when it waits for them.
	InProcess bool
}

// ListJobs returns every job in the journal, oldest first.
func ListJobs(ctx context.Context) ([]JobInfo, error) {
	recs, err := defaultStore().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	out := make([]JobInfo, len(recs))
	for i, r := range recs {
		out[i] = infoOf(r)
	}
	return out, nil
}

// GetJob returns a job's description.
func GetJob(ctx context.Context, id string) (JobInfo, error) {
	h, _, err := openJob(ctx, id)
	if err != nil {
		return JobInfo{}, err
	}
	in, err := h.Info(ctx)
	if err != nil {
		return JobInfo{}, err
	}
	return infoFrom(in), nil
}

// ForgetJob removes a finished job from the journal, with its results and
// log file.
func ForgetJob(ctx context.Context, id string) error {
	st := defaultStore()
	r, err := st.Get(ctx, id)
	if err != nil {
		return notFound(err, id)
	}
	if !r.Final() && !durable.IsLost(r) {
		return fmt.Errorf("meadowrun: job %s is %s: cancel it before forgetting it", id, r.State)
	}
	if err := st.Delete(ctx, id); err != nil {
		return notFound(err, id)
	}
	if r.LogFile != "" && r.Machine == "" {
		os.Remove(r.LogFile)
	}
	return nil
}

// CancelJob stops a job from any process: it marks the journal, signals
// the job's supervisor, and waits (within ctx) until the job has stopped.
// Cancelling a finished job is an error wrapping ErrJobFinished; its
// results are kept. A job of an SSH host is cancelled by the agent of its
// machine.
func CancelJob(ctx context.Context, id string) error {
	h, _, err := openJob(ctx, id)
	if err != nil {
		return err
	}
	return h.Cancel(ctx)
}

// prepareSubmit validates a submission and returns the durable layer,
// the host's URL and the job's options.
func prepareSubmit(ctx context.Context, host *Host, o *Options, sub *SubmitOptions) (*durable.Jobs, string, durableSpec, error) {
	if isSupervisorProcess() && !mainCalled.Load() {
		return nil, "", durableSpec{}, errNoMainSupervisor
	}
	if sub.MaxAttempts < 0 {
		return nil, "", durableSpec{}, fmt.Errorf("meadowrun: SubmitOptions.MaxAttempts is %d; it must be 0 (default) or more", sub.MaxAttempts)
	}
	// The kinds of deployment a detached job can have are checked
	// before the deployment is prepared.
	if _, err := specOf(o, nil); err != nil {
		return nil, "", durableSpec{}, err
	}
	hostURL, ok := HostURL(host)
	if !ok {
		if !sub.InProcess {
			return nil, "", durableSpec{}, fmt.Errorf("%w: a detached job needs a host that another process can open from a URL (Local, or one from OpenHost), not %T", ErrUnsupported, host)
		}
		hostURL = fmt.Sprintf("%T", host)
	}
	// Everything that can be checked here is, so that a bad request
	// fails now, before it is journaled.
	p, err := prepare(ctx, host, o)
	if err != nil {
		return nil, "", durableSpec{}, err
	}
	spec, err := specOf(o, p.env)
	if err != nil {
		return nil, "", spec, err
	}
	return defaultJobs(), hostURL, spec, nil
}

var errNoMainSupervisor = errors.New("meadowrun: this process was started as a meadowrun supervisor, but main did not call meadowrun.Main() first; call it first thing in main")

// submit journals a new job and starts it: in a supervisor, here, or (a
// host whose machines keep jobs) in a supervisor on a machine of the
// host. It returns the job's handle, and the runner of a job that runs
// here.
func submit(ctx context.Context, js *durable.Jobs, rec journal.Record, spec durableSpec, host *Host, sub *SubmitOptions,
	args iter.Seq[rawArg], n int, local *durable.Queue) (*durable.Job, *durable.Runner, error) {
	rec.ID = newJobID()
	if k := host.keeper(ctx); k != nil && !sub.InProcess {
		h, err := submitRemote(ctx, js, k, host.URL(), rec, spec, args, n)
		return h, nil, err
	}
	r, err := submitHere(ctx, js.Store, rec, spec, host, sub, args, n, local)
	if err != nil {
		return nil, nil, err
	}
	h, err := js.Open(ctx, rec)
	return h, r, err
}

// submitRemote has the keeper k of the host of URL url keep the job.
func submitRemote(ctx context.Context, js *durable.Jobs, k driver.JobKeeper, url string, rec journal.Record, spec durableSpec,
	args iter.Seq[rawArg], n int) (*durable.Job, error) {
	// The files go with the job; the supervisor there expands the same
	// globs in a directory holding just them.
	files, err := MirrorLocal(spec.Globs, nil).files()
	if err != nil {
		return nil, err
	}
	// The log directory is the machine's (see agent.StateDir).
	spec.LogDir = ""
	var r Resources
	if spec.Resources != nil {
		r = *spec.Resources
	}
	return js.SubmitRemote(ctx, k, url, durable.Submission{Job: rec, Args: args, N: n, Files: files,
		Resources: r.driverResources(1), Concurrency: spec.Concurrency, Spec: func(c int) ([]byte, error) {
			ps := spec
			ps.Concurrency = c
			return json.Marshal(ps)
		}})
}

// submitHere journals a new job and starts it, in a supervisor or here.
func submitHere(ctx context.Context, st *journal.Store, rec journal.Record, spec durableSpec, host *Host, sub *SubmitOptions,
	args iter.Seq[rawArg], n int, local *durable.Queue) (*durable.Runner, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: encoding the job's options: %w", err)
	}
	rec.Spec, rec.Submitted, rec.Total = b, time.Now(), n
	if !sub.InProcess {
		// A supervisor runs it: this machine's job keeper.
		return nil, durable.NewKeeper(st, logDirOf(spec)).Submit(ctx, rec, args, n, "")
	}
	rec.PID, rec.Proc = os.Getpid(), journal.Self()
	rec.State, rec.Started = JobRunning, rec.Submitted
	if err := st.Create(ctx, rec); err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	return durable.NewRunner(st, rec, args, execJob(spec, host), local), nil
}

// SubmitFunction submits call to run on host as a durable job and returns
// its handle at once (the reference's wait_for_result=False). By default
// a supervisor process, this program re-executed, runs the job and
// journals its outcome, so that the job goes on after this process exits;
// any process can then Attach to it or cancel it by id. The host must be
// one that another process can open from a URL (see HostURL).
func SubmitFunction[R any](ctx context.Context, call Call[R], host *Host, opts *Options, sub *SubmitOptions) (*Detached[R], error) {
	if call.fn == "" {
		return nil, errors.New("meadowrun: SubmitFunction: the call has no function (use Func.With)")
	}
	if call.err != nil {
		return nil, fmt.Errorf("meadowrun: %s: %w", call.fn, call.err)
	}
	if opts == nil {
		opts = &Options{}
	}
	if sub == nil {
		sub = &SubmitOptions{}
	}
	payload, err := call.encode()
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %s: encoding the argument: %w", call.fn, err)
	}
	js, hostURL, spec, err := prepareSubmit(ctx, host, opts, sub)
	if err != nil {
		return nil, err
	}
	spec.Payload, spec.MaxAttempts = payload, sub.MaxAttempts
	rec := journal.Record{Kind: JobFunction, Host: hostURL, Function: journalFunc(call.desc)}
	local := durable.NewQueue()
	h, r, err := submit(ctx, js, rec, spec, host, sub, nil, 1, local)
	if err != nil {
		return nil, err
	}
	d := &Detached[R]{job: h, take: functionTaker(call.fn, call.dec)}
	if r != nil {
		d.local = startLocal(ctx, r, opts)
	}
	return d, nil
}

func functionTaker[R any](name string, dec func([]byte) (R, error)) func(journal.Record, journal.Result) (R, error) {
	return func(rec journal.Record, r journal.Result) (R, error) {
		var zero R
		if err := errorOfFailure(r.Err, r, rec.LogFile); err != nil {
			return zero, err
		}
		v, err := dec(r.Value)
		if err != nil {
			return zero, &TaskError{Attempt: r.Attempt, Kind: KindEncoding, Type: fmt.Sprintf("%T", err),
				Message: fmt.Sprintf("decoding the result of %s: %v", name, err), Worker: r.Worker, Machine: r.Machine, LogFile: rec.LogFile}
		}
		return v, nil
	}
}

// SubmitCommand submits a command to run on host as a durable job and
// returns its handle at once; see SubmitFunction. Its output is kept in
// the job's log file (see JobLog).
func SubmitCommand(ctx context.Context, args []string, host *Host, opts *CommandOptions, sub *SubmitOptions) (*Detached[*JobCompletion], error) {
	if len(args) == 0 || args[0] == "" {
		return nil, errors.New("meadowrun: SubmitCommand: empty command")
	}
	if opts == nil {
		opts = &CommandOptions{}
	}
	if sub == nil {
		sub = &SubmitOptions{}
	}
	if len(opts.ContextVariables) > 0 {
		if _, err := json.Marshal(opts.ContextVariables); err != nil {
			return nil, fmt.Errorf("meadowrun: SubmitCommand: context variables cannot be encoded as JSON: %w", err)
		}
	}
	js, hostURL, spec, err := prepareSubmit(ctx, host, &opts.Options, sub)
	if err != nil {
		return nil, err
	}
	if sub.MaxAttempts > 1 && len(opts.ContextVariables) > 0 {
		return nil, fmt.Errorf("%w: a command job with MaxAttempts > 1 cannot take context variables yet", ErrUnsupported)
	}
	spec.Env, spec.Dir, spec.ContextVariables, spec.MaxAttempts = opts.Env, opts.Dir, opts.ContextVariables, sub.MaxAttempts
	rec := journal.Record{Kind: JobCommand, Host: hostURL, Command: slices.Clone(args)}
	local := durable.NewQueue()
	h, r, err := submit(ctx, js, rec, spec, host, sub, nil, 1, local)
	if err != nil {
		return nil, err
	}
	d := &Detached[*JobCompletion]{job: h, take: takeCompletion}
	if r != nil {
		d.local = startLocal(ctx, r, &opts.Options)
	}
	return d, nil
}

func takeCompletion(rec journal.Record, r journal.Result) (*JobCompletion, error) {
	err := errorOfFailure(r.Err, r, rec.LogFile)
	if len(r.Value) == 0 {
		return nil, err
	}
	var jc JobCompletion
	if jerr := json.Unmarshal(r.Value, &jc); jerr != nil {
		return nil, errors.Join(err, fmt.Errorf("meadowrun: decoding the completion of job %s: %w", rec.ID, jerr))
	}
	jc.JobID = rec.ID
	if jc.LogFile == "" {
		jc.LogFile = rec.LogFile
	}
	return &jc, err
}

// SubmitMap submits a map of f over args to run on host as a durable job
// and returns its handle at once; see SubmitFunction. The arguments are
// journaled before it returns.
func SubmitMap[A, R any](ctx context.Context, f Func[A, R], args []A, host *Host, opts *MapOptions, sub *SubmitOptions) (*DetachedMap[R], error) {
	return submitMap(ctx, f, slices.Values(args), len(args), host, opts, sub, nil)
}

// SubmitMapSeq is SubmitMap over an iterator of arguments. A detached
// map reads the iterator to its end before it returns (to journal every
// argument); an in-process one reads arguments as workers need them.
func SubmitMapSeq[A, R any](ctx context.Context, f Func[A, R], args iter.Seq[A], host *Host, opts *MapOptions, sub *SubmitOptions) (*DetachedMap[R], error) {
	return submitMap(ctx, f, args, -1, host, opts, sub, nil)
}

func submitMap[A, R any](ctx context.Context, f Func[A, R], args iter.Seq[A], n int, host *Host, opts *MapOptions, sub *SubmitOptions, command []string) (*DetachedMap[R], error) {
	if f.name == "" {
		return nil, errors.New("meadowrun: SubmitMap: the function has no name (use Register or Named)")
	}
	if f.err != nil {
		return nil, fmt.Errorf("meadowrun: %s: %w", f.name, f.err)
	}
	if opts == nil {
		opts = &MapOptions{}
	}
	if sub == nil {
		sub = &SubmitOptions{}
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	js, hostURL, spec, err := prepareSubmit(ctx, host, &opts.Options, sub)
	if err != nil {
		return nil, err
	}
	spec.Concurrency, spec.MaxAttempts, spec.RetryWithMoreMemory = opts.Concurrency, opts.MaxAttempts, opts.RetryWithMoreMemory
	rec := journal.Record{Kind: JobMap, Host: hostURL, Function: journalFunc(f.desc), Command: slices.Clone(command)}
	raw := func(yield func(rawArg) bool) {
		for a := range args {
			b, err := f.argCodec.enc(a)
			if !yield(rawArg{B: b, Err: err}) {
				return
			}
		}
	}
	local := durable.NewQueue()
	h, r, err := submit(ctx, js, rec, spec, host, sub, raw, n, local)
	if err != nil {
		return nil, err
	}
	m := &DetachedMap[R]{job: h, dec: f.resCodec.dec, fn: f.name}
	if r != nil {
		m.local = startLocal(ctx, r, &opts.Options)
	}
	return m, nil
}

// SubmitCommands submits a map of commands (see Commands), as
// `meadowrun map` does: SubmitMapSeq(ctx, Commands, tasks, ...) that also
// records the command template, for `meadowrun jobs` to show. n is the
// number of tasks, or -1 if unknown.
func SubmitCommands(ctx context.Context, template []string, tasks iter.Seq[CommandTask], n int, host *Host, opts *MapOptions, sub *SubmitOptions) (*DetachedMap[CommandResult], error) {
	return submitMap(ctx, Commands, tasks, n, host, opts, sub, template)
}

// ImportJob copies the record of job id, kept by host, into this
// process's journal, so that Attach, AttachMap, AttachCommand, GetJob,
// JobLog and CancelJob find it: how a process of another machine than the
// submitter's, holding only the host's configuration, follows a job. The
// host must keep its jobs itself and find a job by its id alone (a
// Kubernetes host with a jobs volume does); other hosts are
// ErrUnsupported.
func ImportJob(ctx context.Context, host *Host, id string) (JobInfo, error) {
	k := host.keeper(ctx)
	f, ok := k.(interface{ JobMachine(id string) string })
	if k == nil || !ok {
		return JobInfo{}, fmt.Errorf("%w: ImportJob: %s does not find its jobs by id", ErrUnsupported, host.URL())
	}
	rec, err := defaultJobs().Import(ctx, k, host.URL(), f.JobMachine(id), id)
	if err != nil {
		return JobInfo{}, err
	}
	return infoOf(rec), nil
}
