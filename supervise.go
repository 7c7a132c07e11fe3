package meadowrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agent"
	"github.com/meadowrun-go/meadowrun/internal/durable"
	"github.com/meadowrun-go/meadowrun/internal/journal"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// durableSpec is what a process needs to run a journaled job, besides the
// record's kind, command, function and host.
type durableSpec struct {
	Resources *Resources        `json:"resources,omitempty"`
	Ports     []string          `json:"ports,omitempty"`
	Sidecars  []Container       `json:"sidecars,omitempty"`
	DeployEnv map[string]string `json:"deploy_env,omitempty"`
	Globs     []string          `json:"globs,omitempty"`
	// Interpreted is set for a PreinstalledInterpreter deployment, whose
	// path is Interpreter ("" for python3).
	Interpreted bool   `json:"interpreted,omitempty"`
	Interpreter string `json:"interpreter,omitempty"`
	// Image, Digest and Creds are a container deployment's: the secret's
	// reference, never its values. Interpreter is set for a
	// ContainerInterpreter.
	Image  string `json:"image,omitempty"`
	Digest string `json:"digest,omitempty"`
	Creds  Secret `json:"creds,omitzero"`
	// Environment is an environment deployment's specification, resolved
	// at submission, so that the supervisor builds what was submitted.
	Environment *driver.Environment `json:"environment,omitempty"`
	LogDir      string              `json:"log_dir,omitempty"`
	// Commands.
	Env              map[string]string `json:"env,omitempty"`
	Dir              string            `json:"dir,omitempty"`
	ContextVariables map[string]any    `json:"context_variables,omitempty"`
	// Functions: the encoded argument.
	Payload []byte `json:"payload,omitempty"`
	// Maps.
	Concurrency         int  `json:"concurrency,omitempty"`
	MaxAttempts         int  `json:"max_attempts,omitempty"`
	RetryWithMoreMemory bool `json:"retry_with_more_memory,omitempty"`
}

// specOf is the durable spec of a job with options o, whose environment
// deployment (if any) resolved to env.
func specOf(o *Options, env *driver.Environment) (durableSpec, error) {
	d := o.Deployment
	if k := d.Kind(); k != "mirror_local" && k != "interpreter" && k != "container" && k != "environment" {
		return durableSpec{}, fmt.Errorf("%w: detached jobs run mirror_local, interpreter, environment and container deployments only for now, not %s", ErrUnsupported, k)
	}
	s := durableSpec{Resources: o.Resources, Ports: o.Ports, Sidecars: o.Sidecars,
		DeployEnv: d.env, Globs: d.globs, Interpreted: d.kind == "interpreter", Interpreter: d.interpreter, LogDir: o.LogDir,
		Environment: env}
	if d.kind == "container" {
		s.Image, s.Digest, s.Creds = d.image, d.digest, d.creds
	}
	return s, nil
}

func (s durableSpec) options(out io.Writer) Options {
	d := MirrorLocal(s.Globs, s.DeployEnv)
	switch {
	case s.Environment != nil:
		d = Deployment{kind: "environment", resolved: s.Environment, env: s.DeployEnv, globs: s.Globs}
	case s.Interpreted:
		d = PreinstalledInterpreter(s.Interpreter, s.DeployEnv).WithGlobs(s.Globs...)
	case s.Image != "":
		d = Deployment{kind: "container", image: s.Image, digest: s.Digest, creds: s.Creds, interpreter: s.Interpreter,
			env: s.DeployEnv, globs: s.Globs}
	}
	return Options{Resources: s.Resources, Ports: s.Ports, Sidecars: s.Sidecars,
		Deployment: d, LogDir: s.LogDir, Output: out}
}

// rawArg is an encoded argument, or the error encoding it.
type rawArg = durable.Arg

// rawFunc runs the function that desc names on encoded arguments and
// returns encoded results: how a journaled job runs a function whose Go
// types only the submitter and the attacher know.
func rawFunc(desc wire.Function) Func[rawArg, []byte] {
	return Func[rawArg, []byte]{
		name:     desc.Name,
		desc:     desc,
		argCodec: codec[rawArg]{name: "raw", enc: func(a rawArg) ([]byte, error) { return a.B, a.Err }},
		resCodec: codec[[]byte]{name: "raw", enc: func(b []byte) ([]byte, error) { return b, nil }, dec: func(b []byte) ([]byte, error) { return b, nil }},
	}
}

func wireFunc(f *journal.Function) wire.Function {
	return wire.Function{Name: f.Name, Arg: f.Arg, Result: f.Result, Codec: f.Codec}
}

func journalFunc(f wire.Function) *journal.Function {
	return &journal.Function{Name: f.Name, Arg: f.Arg, Result: f.Result, Codec: f.Codec}
}

// failureOfError describes a task's error for the journal.
func failureOfError(err error) *journal.Failure {
	if err == nil {
		return nil
	}
	var te *TaskError
	if errors.As(err, &te) {
		return &journal.Failure{Kind: te.Kind.String(), Type: te.Type, Message: te.Message, Stack: te.Stack,
			ExitCode: te.ExitCode, Signal: te.Signal, PeakMemoryBytes: te.PeakMemoryBytes, LimitBytes: te.LimitBytes}
	}
	return &journal.Failure{Message: err.Error(), Canceled: errors.Is(err, context.Canceled)}
}

// errorOfFailure rebuilds a task's error from the journal.
func errorOfFailure(f *journal.Failure, r journal.Result, logFile string) error {
	if f == nil {
		return nil
	}
	if f.Kind == "" {
		return &jobError{msg: f.Message, canceled: f.Canceled}
	}
	te := &TaskError{TaskID: max(r.Task, 0), Attempt: r.Attempt, Type: f.Type, Message: f.Message, Stack: f.Stack,
		ExitCode: f.ExitCode, Signal: f.Signal, PeakMemoryBytes: f.PeakMemoryBytes, LimitBytes: f.LimitBytes,
		Worker: r.Worker, Machine: r.Machine, LogFile: logFile}
	for k, name := range kindNames {
		if name == f.Kind {
			te.Kind = k
		}
	}
	return te
}

// jobError is a failure of a whole journaled job, read back from the
// journal. A cancelled job's error matches context.Canceled.
type jobError struct {
	msg      string
	canceled bool
}

func (e *jobError) Error() string { return e.msg }
func (e *jobError) Is(target error) bool {
	return e.canceled && target == context.Canceled
}

// failureIn describes err for the journal, naming the job by its journal
// id rather than the id the library gave its run.
func failureIn(err error, runID, jobID string) *journal.Failure {
	f := failureOfError(err)
	if f != nil && f.Kind == "" {
		f.Message = strings.ReplaceAll(f.Message, runID, jobID)
	}
	return f
}

// execJob is how a journaled job runs in this process: with spec's
// options on host, through the same entry points as any job, each
// outcome handed to the durable layer's run as it arrives.
func execJob(spec durableSpec, host *Host) durable.Exec {
	return func(ctx context.Context, run *durable.Run) error {
		rec := run.Job()
		fail := func(err error) error { return run.Fail(err.Error(), failureOfError(err)) }
		opts := spec.options(run.Output())
		// finishOne records a single-result job's outcome and its final
		// state.
		finishOne := func(res journal.Result, failed bool, exit *int) error {
			run.Emit(res)
			if failed {
				return run.Finish(JobFailed, exit)
			}
			return run.Finish(JobSucceeded, exit)
		}
		switch rec.Kind {
		case "command", "function":
			if spec.MaxAttempts <= 1 {
				break
			}
			// Retried as a map of one task: one log, attempts noted in it.
			desc, payload := rec.Function, spec.Payload
			if rec.Kind == JobCommand {
				desc = journalFunc(Commands.desc)
				payload, _ = json.Marshal(CommandTask{Args: rec.Command, Env: spec.Env, Dir: spec.Dir})
			}
			mo := &MapOptions{Options: opts, Concurrency: 1, MaxAttempts: spec.MaxAttempts}
			m, err := startMap(ctx, context.WithoutCancel(ctx), rawFunc(wireFunc(desc)), nil, []rawArg{{B: payload}}, 1, host, mo)
			if err != nil {
				return fail(err)
			}
			localCosts.Store(rec.ID, m.Cost)
			run.TrackCost(m.Cost)
			run.Started(m.Cancel, m.LogFile())
			var res journal.Result
			haveTask := false
			for tr := range m.AsCompleted() {
				if haveTask && tr.TaskID < 0 {
					continue // the task's own outcome says more
				}
				haveTask = tr.TaskID >= 0
				res = journal.Result{Task: max(tr.TaskID, 0), Attempt: tr.Attempt, Value: tr.Value, Err: failureIn(tr.Err, m.ID(), rec.ID),
					Worker: tr.Worker, Machine: tr.Machine, Nanos: int64(tr.Duration), Peak: tr.PeakMemoryBytes, Cost: tr.CostUSD}
			}
			var exit *int
			if rec.Kind == JobCommand {
				jc, err := commandCompletion(rec.Command, res, m.LogFile())
				res.Value, _ = json.Marshal(jc)
				res.Err = failureOfError(err)
				exit = &jc.ReturnCode
			}
			return finishOne(res, res.Err != nil, exit)
		}
		switch rec.Kind {
		case "command":
			co := &CommandOptions{Options: opts, Env: spec.Env, Dir: spec.Dir, ContextVariables: spec.ContextVariables}
			j, err := startCommand(ctx, context.WithoutCancel(ctx), rec.Command, host, co)
			if err != nil {
				return fail(err)
			}
			localCosts.Store(rec.ID, j.Cost)
			run.TrackCost(j.Cost)
			run.Started(j.Cancel, j.LogFile())
			jc, jerr := j.Wait(context.Background())
			res := journal.Result{Task: 0, Attempt: 1, Err: failureIn(jerr, j.ID(), rec.ID)}
			var exit *int
			if jc != nil {
				res.Value, _ = json.Marshal(jc)
				res.Worker, res.Machine, res.Nanos, res.Peak = jc.Worker, jc.Machine, int64(jc.Duration), jc.PeakMemoryBytes
				exit = &jc.ReturnCode
			}
			var te *TaskError
			if errors.As(jerr, &te) {
				res.Attempt = te.Attempt
			}
			return finishOne(res, jerr != nil, exit)

		case "function":
			fn := wireFunc(rec.Function)
			payload := spec.Payload
			call := Call[[]byte]{fn: fn.Name, desc: fn, encode: func() ([]byte, error) { return payload, nil },
				dec: func(b []byte) ([]byte, error) { return b, nil }}
			j, err := startFunction(ctx, context.WithoutCancel(ctx), call, host, &opts)
			if err != nil {
				return fail(err)
			}
			localCosts.Store(rec.ID, j.Cost)
			run.TrackCost(j.Cost)
			run.Started(j.Cancel, j.LogFile())
			val, jerr := j.Wait(context.Background())
			res := journal.Result{Task: 0, Attempt: 1, Value: val, Err: failureIn(jerr, j.ID(), rec.ID)}
			var te *TaskError
			if errors.As(jerr, &te) {
				res.Attempt, res.Worker, res.Machine = te.Attempt, te.Worker, te.Machine
			}
			return finishOne(res, jerr != nil, nil)

		case "map":
			mo := &MapOptions{Options: opts, Concurrency: spec.Concurrency, MaxAttempts: spec.MaxAttempts,
				RetryWithMoreMemory: spec.RetryWithMoreMemory}
			m, err := startMap(ctx, context.WithoutCancel(ctx), rawFunc(wireFunc(rec.Function)), run.Args(), nil, rec.Total, host, mo)
			if err != nil {
				return fail(err)
			}
			localCosts.Store(rec.ID, m.Cost)
			run.TrackCost(m.Cost)
			run.Started(m.Cancel, m.LogFile())
			failed := false
			for tr := range m.AsCompleted() {
				res := journal.Result{Task: tr.TaskID, Attempt: tr.Attempt, Value: tr.Value, Err: failureIn(tr.Err, m.ID(), rec.ID),
					Worker: tr.Worker, Machine: tr.Machine, Nanos: int64(tr.Duration), Peak: tr.PeakMemoryBytes, Cost: tr.CostUSD}
				if tr.Err != nil {
					failed = true
				}
				run.Emit(res)
			}
			if failed {
				return run.Finish(JobFailed, nil)
			}
			return run.Finish(JobSucceeded, nil)
		}
		return fail(fmt.Errorf("meadowrun: job %s has unknown kind %q", rec.ID, rec.Kind))
	}
}

// commandCompletion describes a command run as a map of one task the way
// RunCommand does.
func commandCompletion(args []string, res journal.Result, logFile string) (*JobCompletion, error) {
	jc := &JobCompletion{LogFile: logFile, Machine: res.Machine, Worker: res.Worker, Duration: time.Duration(res.Nanos), PeakMemoryBytes: res.Peak}
	err := errorOfFailure(res.Err, res, logFile)
	if err == nil {
		return jc, nil
	}
	code, ok := CommandExitCode(err)
	if !ok {
		var te *TaskError
		if errors.As(err, &te) {
			jc.ReturnCode = te.ExitCode
		}
		return jc, err
	}
	jc.ReturnCode = code
	te := &TaskError{Attempt: res.Attempt, Kind: KindExit, ExitCode: code, Type: "exit",
		Message: fmt.Sprintf("%s exited with code %d", args[0], code), Worker: res.Worker, Machine: res.Machine, LogFile: logFile}
	switch msg := res.Err.Message; {
	case code == 127 && strings.Contains(msg, "command not found"):
		te.Type, te.Message = "command-not-found", fmt.Sprintf("command not found: %s", args[0])
	case strings.Contains(msg, " was killed by "):
		te.Kind, te.Message = KindCrash, strings.TrimSuffix(msg, fmt.Sprintf(" (exit code %d)", code))
	}
	return jc, te
}

// isSupervisorProcess reports whether this process was started to
// supervise a job.
func isSupervisorProcess() bool { return durable.IsSupervisor() }

// supervise is the main of a supervisor process; it returns the exit code.
func supervise() int {
	return durable.Supervise(func(rec journal.Record) (durable.Prepared, error) {
		var spec durableSpec
		if err := json.Unmarshal(rec.Spec, &spec); err != nil {
			return durable.Prepared{}, fmt.Errorf("decoding its options: %w", err)
		}
		return durable.Prepared{LogDir: logDirOf(spec), Open: func(ctx context.Context) (durable.Exec, error) {
			host, err := openSupervisedHost(ctx, rec.Host)
			if err != nil {
				return nil, err
			}
			return execJob(spec, host), nil
		}}, nil
	})
}

func logDirOf(spec durableSpec) string {
	if spec.LogDir != "" {
		return spec.LogDir
	}
	return defaultLogDir()
}

// openSupervisedHost opens a journaled job's host. This machine's workers
// re-execute /proc/self/exe, the supervisor's own code, even if its file
// has been removed since.
func openSupervisedHost(ctx context.Context, rawURL string) (*Host, error) {
	s := rawURL
	if !strings.Contains(s, ":") {
		s += "://"
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "local" {
		return OpenHost(ctx, rawURL)
	}
	if _, err := openLocal(ctx, u); err != nil {
		return nil, fmt.Errorf("opening host %q: %w", rawURL, err)
	}
	p, _ := floatParams(u, "cpu", "memory")
	return newLocalHost(ctx, "/proc/self/exe", p["cpu"], p["memory"])
}

// The agent keeps the jobs of its machine in a journal of its own (see
// agent.StateDir): its supervisors run with XDG_STATE_HOME pointing there,
// so that the journal they open is that one and their logs are next to it.
func init() {
	agent.Jobs = func(st *journal.Store) driver.JobKeeper {
		return durable.NewKeeper(st, filepath.Join(st.Dir(), "logs"), "XDG_STATE_HOME="+filepath.Dir(st.Dir()))
	}
}
