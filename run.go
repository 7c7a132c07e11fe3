package meadowrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/coord"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// prepared is a validated call, bound to its host.
type prepared struct {
	drv   driver.Host
	pool  *coord.Pool
	fits  int
	files []string // the deployment's files, from its globs
	// creds are the deployment's and the sidecars' registry credentials,
	// read from their secrets.
	creds        *driver.Credentials
	sidecarCreds []*driver.Credentials
	// env is the Python environment of an environment deployment,
	// resolved here.
	env *driver.Environment
}

// prepare validates everything that can be checked before any work starts:
// options, resources against what the host can ever offer, and features
// the host must support.
func prepare(ctx context.Context, host *Host, o *Options) (*prepared, error) {
	if err := checkNotRecursive(); err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	drv, pool, err := host.use(ctx)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: opening the host: %w", err)
	}
	res := o.resources()
	if err := supports(drv, o, res); err != nil {
		return nil, err
	}
	fits, err := drv.Fit(ctx, res.driverResources(1))
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	if fits < 1 {
		return nil, fmt.Errorf("meadowrun: %s: a worker with %s %w", drv.Name(), res.driverResources(1), ErrNeverFits)
	}
	files, err := o.Deployment.files()
	if err != nil {
		return nil, err
	}
	creds, sidecarCreds, err := o.credentials(ctx)
	if err != nil {
		return nil, err
	}
	env, err := o.Deployment.environment(ctx)
	if err != nil {
		return nil, err
	}
	return &prepared{drv: drv, pool: pool, fits: fits, files: files, creds: creds, sidecarCreds: sidecarCreds, env: env}, nil
}

// supports checks that the host can honour every option: what it cannot
// do is refused, never ignored.
func supports(drv driver.Host, o *Options, res Resources) error {
	caps := drv.Capabilities()
	kind := o.Deployment.driver().KindOrDefault()
	switch {
	case len(o.Sidecars) > 0 && !caps.Sidecars:
		return fmt.Errorf("meadowrun: %s cannot start sidecar containers (%d requested): %w", drv.Name(), len(o.Sidecars), ErrUnsupported)
	case len(o.Ports) > 0 && !caps.Ports:
		return fmt.Errorf("meadowrun: %s cannot open ports (%s requested): %w", drv.Name(), strings.Join(o.Ports, ", "), ErrUnsupported)
	case !caps.CanDeploy(kind):
		return fmt.Errorf("meadowrun: %s cannot run a %s deployment yet: %w", drv.Name(), kind, ErrUnsupported)
	case !caps.CanRun(o.Deployment.runtime()):
		return fmt.Errorf("meadowrun: %s cannot run %s workers yet: %w", drv.Name(), o.Deployment.runtime(), ErrUnsupported)
	case res.MemoryGB > 0 && !caps.MemoryLimits:
		return fmt.Errorf("meadowrun: %s cannot enforce a memory limit (MemoryGB %g requested): %w", drv.Name(), res.MemoryGB, ErrUnsupported)
	}
	return nil
}

// jobSpec is a job as the coordinator runs it, and its id.
type jobSpec struct {
	id string
	coord.Spec
}

// spec builds the coordinator's spec of a job of fn (or of a command) with
// options o: one task, one attempt, until the caller says otherwise.
func (p *prepared) spec(o *Options, fn wire.Function, command bool) jobSpec {
	id := newJobID()
	dir := o.LogDir
	if dir == "" {
		dir = defaultLogDir()
	}
	var out io.Writer = os.Stderr
	if o.Output != nil {
		out = o.Output
	}
	d := o.Deployment
	worker := driver.WorkerSpec{Env: d.env, Files: p.files, Deployment: d.driver(), Runtime: d.runtime(),
		Ports: slices.Clone(o.Ports), Sidecars: o.sidecars(p.sidecarCreds)}
	worker.Deployment.Credentials = p.creds
	poolKey := o.poolKey()
	if p.env != nil {
		// Workers of another version of the requirements are of another
		// environment.
		worker.Deployment.Environment = p.env
		poolKey += "|env=" + p.env.Hash()
	}
	return jobSpec{id: id, Spec: coord.Spec{Func: fn, Command: command, Resources: o.resources().driverResources,
		Worker: worker, PoolKey: poolKey, Concurrency: 1, MaxAttempts: 1, Pool: p.pool,
		Logs: coord.NewLogs(dir, id, out), TasksHint: 1}}
}

// jobSeq numbers jobs within the process.
var jobSeq atomic.Uint64

func newJobID() string {
	now := time.Now().UTC()
	b := make([]byte, 0, 48)
	b = jobIDPrefix(now.Unix(), b)
	b = append(b, '-')
	return string(strconv.AppendUint(b, jobSeq.Add(1), 10))
}

// jobIDPrefixCache holds the "TIME-PID" part of job ids for the current
// second: a warm call would otherwise format the time for every job.
var jobIDPrefixCache struct {
	sync.Mutex
	sec    int64
	prefix string
}

// jobIDPrefix appends "20060102T150405-PID" for the second sec to b.
func jobIDPrefix(sec int64, b []byte) []byte {
	c := &jobIDPrefixCache
	c.Lock()
	defer c.Unlock()
	if c.prefix == "" || c.sec != sec {
		t := time.Unix(sec, 0).UTC()
		c.sec, c.prefix = sec, t.Format("20060102T150405")+"-"+strconv.Itoa(os.Getpid())
	}
	return append(b, c.prefix...)
}

// defaultLogDir is $XDG_STATE_HOME/meadowrun/logs, or ~/.local/state/...,
// or the temporary directory when there is no home.
func defaultLogDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "meadowrun", "logs")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "meadowrun", "logs")
	}
	return filepath.Join(os.TempDir(), "meadowrun", "logs")
}

// Job is a function or command job started with StartFunction or
// StartCommand: the handle of fire-and-forget work in this process.
type Job[T any] struct {
	run  *coord.Job
	id   string
	logs *coord.Logs
	take func(coord.Outcome) (T, error)
	once sync.Once
	done chan struct{}
	val  T
	err  error
}

func newJob[T any](run *coord.Job, spec jobSpec, take func(coord.Outcome) (T, error)) *Job[T] {
	return &Job[T]{run: run, id: spec.id, logs: spec.Logs, take: take, done: make(chan struct{})}
}

// collect receives the job's one outcome.
func (j *Job[T]) collect() {
	got := false
	for o := range j.run.Outcomes() {
		j.val, j.err = j.take(o)
		got = true
	}
	if !got {
		j.err = j.run.StopError()
	}
	close(j.done)
}

// wait blocks until the job's outcome, receiving it on the caller's
// goroutine when nobody else is.
func (j *Job[T]) wait() (T, error) {
	j.once.Do(j.collect)
	<-j.done
	return j.val, j.err
}

// ID identifies the job.
func (j *Job[T]) ID() string { return j.id }

// LogFile is where the job's output is kept.
func (j *Job[T]) LogFile() string { return j.logs.Path() }

// Cancel stops the job: its worker is killed.
func (j *Job[T]) Cancel() {
	j.run.Stop(fmt.Errorf("meadowrun: job %s cancelled: %w", j.ID(), context.Canceled))
}

// Done is closed when the job has finished.
func (j *Job[T]) Done() <-chan struct{} {
	j.once.Do(func() { go j.collect() })
	return j.done
}

// Wait waits for the job and returns its result. If ctx ends first, Wait
// returns ctx's error and the job goes on.
func (j *Job[T]) Wait(ctx context.Context) (T, error) {
	if ctx.Done() == nil {
		return j.wait()
	}
	select {
	case <-j.Done():
		return j.val, j.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// StartFunction starts call on host and returns at once with a handle (the
// reference's wait_for_result=False). The job is not tied to ctx, which
// only bounds the start; use Job.Cancel to stop it.
func StartFunction[R any](ctx context.Context, call Call[R], host *Host, opts *Options) (*Job[R], error) {
	return startFunction(ctx, context.WithoutCancel(ctx), call, host, opts)
}

// RunFunction runs call on host and returns its result. Cancelling ctx
// kills the worker and returns ctx's error. A failure in the function is a
// *TaskError carrying the remote error's type, message and stack.
func RunFunction[R any](ctx context.Context, call Call[R], host *Host, opts *Options) (R, error) {
	j, err := startFunction(ctx, ctx, call, host, opts)
	if err != nil {
		var zero R
		return zero, err
	}
	return j.wait()
}

func startFunction[R any](ctx, runCtx context.Context, call Call[R], host *Host, opts *Options) (*Job[R], error) {
	if call.fn == "" {
		return nil, errors.New("meadowrun: RunFunction: the call has no function (use Func.With)")
	}
	if call.err != nil {
		return nil, fmt.Errorf("meadowrun: %s: %w", call.fn, call.err)
	}
	if opts == nil {
		opts = &Options{}
	}
	p, err := prepare(ctx, host, opts)
	if err != nil {
		return nil, err
	}
	payload, encErr := call.encode()
	if encErr != nil {
		return nil, fmt.Errorf("meadowrun: %s: encoding the argument: %w", call.fn, encErr)
	}
	spec := p.spec(opts, call.desc, false)
	run := coord.Start(runCtx, spec.Spec, single(payload), nil)
	return newJob(run, spec, func(o coord.Outcome) (R, error) {
		var zero R
		if err := outcomeErr(o); err != nil {
			return zero, err
		}
		v, err := call.dec(o.Payload)
		if err != nil {
			return zero, &TaskError{Attempt: o.Attempt, Kind: KindEncoding, Type: fmt.Sprintf("%T", err),
				Message: fmt.Sprintf("decoding the result of %s: %v", call.fn, err), Worker: o.Worker, Machine: o.Machine, LogFile: spec.Logs.Existing()}
		}
		return v, nil
	}), nil
}

func single(payload []byte) func() ([]byte, error, bool) {
	done := false
	return func() ([]byte, error, bool) {
		if done {
			return nil, nil, false
		}
		done = true
		return payload, nil, true
	}
}

// RunCommand runs a command (argv, no shell) on host and waits for it. Its
// output is streamed to Options.Output and kept in the job's log file. A
// command that exits non-zero returns its JobCompletion together with a
// *TaskError of KindExit; one that does not exist exits 127.
func RunCommand(ctx context.Context, args []string, host *Host, opts *CommandOptions) (*JobCompletion, error) {
	j, err := startCommand(ctx, ctx, args, host, opts)
	if err != nil {
		return nil, err
	}
	return j.wait()
}

// StartCommand starts a command and returns at once with a handle (the
// reference's wait_for_result=False); see StartFunction.
func StartCommand(ctx context.Context, args []string, host *Host, opts *CommandOptions) (*Job[*JobCompletion], error) {
	return startCommand(ctx, context.WithoutCancel(ctx), args, host, opts)
}

func startCommand(ctx, runCtx context.Context, args []string, host *Host, opts *CommandOptions) (*Job[*JobCompletion], error) {
	if len(args) == 0 || args[0] == "" {
		return nil, errors.New("meadowrun: RunCommand: empty command")
	}
	if opts == nil {
		opts = &CommandOptions{}
	}
	cmd := wire.Command{Args: args, Env: opts.Env, Dir: opts.Dir}
	if len(opts.ContextVariables) > 0 {
		b, err := json.Marshal(opts.ContextVariables)
		if err != nil {
			return nil, fmt.Errorf("meadowrun: RunCommand: context variables cannot be encoded as JSON: %w", err)
		}
		cmd.ContextVariables = b
	}
	p, err := prepare(ctx, host, &opts.Options)
	if err != nil {
		return nil, err
	}
	payload, _ := json.Marshal(cmd)
	spec := p.spec(&opts.Options, wire.Function{}, true)
	run := coord.Start(runCtx, spec.Spec, single(payload), nil)
	return newJob(run, spec, func(o coord.Outcome) (*JobCompletion, error) {
		jc := &JobCompletion{JobID: spec.id, LogFile: spec.Logs.Existing(), Machine: o.Machine, Worker: o.Worker,
			Duration: o.Duration, PeakMemoryBytes: o.PeakMemoryBytes, CostUSD: run.Cost()}
		if err := outcomeErr(o); err != nil {
			if o.Failure != nil {
				jc.ReturnCode = o.Failure.ExitCode
			}
			return jc, err
		}
		var cr wire.CommandResult
		if err := json.Unmarshal(o.Payload, &cr); err != nil {
			return jc, fmt.Errorf("meadowrun: decoding the command's completion: %w", err)
		}
		jc.ReturnCode, jc.Result = cr.ExitCode, cr.Result
		if cr.ExitCode != 0 {
			te := &TaskError{Attempt: o.Attempt, Kind: KindExit, ExitCode: cr.ExitCode, Signal: cr.Signal,
				Type: "exit", Message: fmt.Sprintf("%s exited with code %d", args[0], cr.ExitCode),
				Worker: o.Worker, Machine: o.Machine, LogFile: spec.Logs.Existing()}
			if cr.NotFound {
				te.Type, te.Message = "command-not-found", fmt.Sprintf("command not found: %s", args[0])
			}
			if cr.Signal != "" {
				te.Kind, te.Message = KindCrash, fmt.Sprintf("%s was killed by %s", args[0], cr.Signal)
			}
			return jc, te
		}
		return jc, nil
	}), nil
}
