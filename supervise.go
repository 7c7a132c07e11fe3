package meadowrun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/journal"
	"github.com/meadowrun-go/meadowrun/internal/wire"
	"github.com/meadowrun-go/meadowrun/internal/worker"
)

// A supervisor is this program re-executed with envSupervise set to a job
// id: Main recognises it, and the process runs that job, journaling every
// outcome, in a session of its own so that it outlives the submitter.
const (
	envSupervise      = "MEADOWRUN_SUPERVISE"
	envSuperviseState = "MEADOWRUN_SUPERVISE_STATE"
	// superviseAckFD is the pipe on which the supervisor tells the
	// submitter it has taken the job.
	superviseAckFD = 3
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
	LogDir      string `json:"log_dir,omitempty"`
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

func specOf(o *Options) (durableSpec, error) {
	d := o.Deployment
	if k := d.Kind(); k != "mirror_local" && k != "interpreter" {
		return durableSpec{}, fmt.Errorf("%w: detached jobs run mirror_local and interpreter deployments only for now, not %s", ErrUnsupported, k)
	}
	return durableSpec{Resources: o.Resources, Ports: o.Ports, Sidecars: o.Sidecars,
		DeployEnv: d.env, Globs: d.globs, Interpreted: d.kind == "interpreter", Interpreter: d.interpreter, LogDir: o.LogDir}, nil
}

func (s durableSpec) options(out io.Writer) Options {
	d := MirrorLocal(s.Globs, s.DeployEnv)
	if s.Interpreted {
		d = PreinstalledInterpreter(s.Interpreter, s.DeployEnv)
	}
	return Options{Resources: s.Resources, Ports: s.Ports, Sidecars: s.Sidecars,
		Deployment: d, LogDir: s.LogDir, Output: out}
}

// rawArg is an encoded argument, or the error encoding it.
type rawArg struct {
	b   []byte
	err error
}

// rawFunc runs the function that desc names on encoded arguments and
// returns encoded results: how a journaled job runs a function whose Go
// types only the submitter and the attacher know.
func rawFunc(desc wire.Function) Func[rawArg, []byte] {
	return Func[rawArg, []byte]{
		name:     desc.Name,
		desc:     desc,
		argCodec: codec[rawArg]{name: "raw", enc: func(a rawArg) ([]byte, error) { return a.b, a.err }},
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

// runner runs one journaled job in this process (a supervisor, or the
// submitter itself with SubmitOptions.InProcess) and journals its
// outcomes as they arrive.
type runner struct {
	st   *journal.Store
	rec  journal.Record
	spec durableSpec
	host *Host
	out  io.Writer
	// args are a map's encoded arguments.
	args iter.Seq[rawArg]
	// local, when set, also receives every outcome: the in-process handle.
	local *resultQueue

	mu        sync.Mutex
	stopped   bool
	cancelJob func()
	cancelCtx context.CancelFunc
	logFile   string
}

// failure describes err for the journal, naming the job by its journal
// id rather than the id the library gave its run.
func (r *runner) failure(err error, runID string) *journal.Failure {
	f := failureOfError(err)
	if f != nil && f.Kind == "" {
		f.Message = strings.ReplaceAll(f.Message, runID, r.rec.ID)
	}
	return f
}

// record returns the job's record as the runner knows it.
func (r *runner) record() journal.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.rec
	rec.LogFile = r.logFile
	return rec
}

// stop cancels the job: at once if it has started, as soon as it starts
// otherwise.
func (r *runner) stop() {
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

// isStopped reports whether the job was cancelled.
func (r *runner) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// run runs the job until it ends, or until ctx ends (which cancels it),
// and returns the journal's error, if journaling failed.
func (r *runner) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	r.cancelCtx = cancel
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		cancel()
	}
	id := r.rec.ID
	setCancel := func(c func()) {
		r.mu.Lock()
		r.cancelJob = c
		stopped := r.stopped
		r.mu.Unlock()
		if stopped {
			c()
		}
	}
	// The job's output and the recorder's warnings share the writer.
	var out io.Writer = os.Stderr
	if r.out != nil {
		out = r.out
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
	rc := newRecorder(r.st, id, r.stop, warn, persist)
	setLog := func(path string) {
		r.mu.Lock()
		r.logFile = path
		r.mu.Unlock()
		rc.mutate(func(rec *journal.Record) { rec.LogFile = path })
	}
	defer rc.stop()
	go func() {
		<-ctx.Done()
		r.stop()
	}()

	final := func(state JobState, jobErr error, exit *int) error {
		f := func(rec *journal.Record) {
			rec.State = state
			if rec.CancelRequested || ((ctx.Err() != nil || r.isStopped()) && state != JobSucceeded) {
				rec.State = JobCancelled
			}
			rec.Finished = time.Now()
			if _, err := os.Stat(rec.LogFile); rec.LogFile != "" && errors.Is(err, fs.ErrNotExist) {
				// The job printed nothing: no result names a log that
				// does not exist.
				rec.LogFile = ""
			}
			if jobErr != nil && rec.Error == "" {
				rec.Error = jobErr.Error()
			}
			if exit != nil {
				rec.ExitCode = exit
			}
		}
		return rc.close(f)
	}
	fail := func(err error) error {
		if r.local != nil {
			r.local.push(journal.Result{Task: -1, Err: failureOfError(err)})
			r.local.close()
		}
		rc.add(journal.Result{Task: -1, Err: failureOfError(err)})
		return final(JobFailed, err, nil)
	}
	opts := r.spec.options(sw)
	emit := func(res journal.Result) {
		if r.local != nil {
			r.local.push(res)
		}
		rc.add(res)
	}
	// finishOne records a single-result job's outcome and its final state.
	finishOne := func(res journal.Result, failed bool, exit *int) error {
		emit(res)
		if r.local != nil {
			r.local.close()
		}
		if failed {
			return final(JobFailed, nil, exit)
		}
		return final(JobSucceeded, nil, exit)
	}
	switch r.rec.Kind {
	case "command", "function":
		if r.spec.MaxAttempts <= 1 {
			break
		}
		// Retried as a map of one task: one log, attempts noted in it.
		desc, payload := r.rec.Function, r.spec.Payload
		if r.rec.Kind == JobCommand {
			desc = journalFunc(Commands.desc)
			payload, _ = json.Marshal(CommandTask{Args: r.rec.Command, Env: r.spec.Env, Dir: r.spec.Dir})
		}
		mo := &MapOptions{Options: opts, Concurrency: 1, MaxAttempts: r.spec.MaxAttempts}
		m, err := startMap(ctx, context.WithoutCancel(ctx), rawFunc(wireFunc(desc)), slices.Values([]rawArg{{b: payload}}), 1, r.host, mo)
		if err != nil {
			return fail(err)
		}
		setCancel(m.Cancel)
		setLog(m.LogFile())
		var res journal.Result
		haveTask := false
		for tr := range m.AsCompleted() {
			if haveTask && tr.TaskID < 0 {
				continue // the task's own outcome says more
			}
			haveTask = tr.TaskID >= 0
			res = journal.Result{Task: max(tr.TaskID, 0), Attempt: tr.Attempt, Value: tr.Value, Err: r.failure(tr.Err, m.ID()),
				Worker: tr.Worker, Machine: tr.Machine, Nanos: int64(tr.Duration), Peak: tr.PeakMemoryBytes}
		}
		var exit *int
		if r.rec.Kind == JobCommand {
			jc, err := commandCompletion(r.rec.Command, res, m.LogFile())
			res.Value, _ = json.Marshal(jc)
			res.Err = failureOfError(err)
			exit = &jc.ReturnCode
		}
		return finishOne(res, res.Err != nil, exit)
	}
	switch r.rec.Kind {
	case "command":
		co := &CommandOptions{Options: opts, Env: r.spec.Env, Dir: r.spec.Dir, ContextVariables: r.spec.ContextVariables}
		j, err := startCommand(ctx, context.WithoutCancel(ctx), r.rec.Command, r.host, co)
		if err != nil {
			return fail(err)
		}
		setCancel(j.Cancel)
		setLog(j.LogFile())
		jc, jerr := j.Wait(context.Background())
		res := journal.Result{Task: 0, Attempt: 1, Err: r.failure(jerr, j.ID())}
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
		fn := wireFunc(r.rec.Function)
		payload := r.spec.Payload
		call := Call[[]byte]{fn: fn.Name, desc: fn, encode: func() ([]byte, error) { return payload, nil },
			dec: func(b []byte) ([]byte, error) { return b, nil }}
		j, err := startFunction(ctx, context.WithoutCancel(ctx), call, r.host, &opts)
		if err != nil {
			return fail(err)
		}
		setCancel(j.Cancel)
		setLog(j.LogFile())
		val, jerr := j.Wait(context.Background())
		res := journal.Result{Task: 0, Attempt: 1, Value: val, Err: r.failure(jerr, j.ID())}
		var te *TaskError
		if errors.As(jerr, &te) {
			res.Attempt, res.Worker, res.Machine = te.Attempt, te.Worker, te.Machine
		}
		return finishOne(res, jerr != nil, nil)

	case "map":
		mo := &MapOptions{Options: opts, Concurrency: r.spec.Concurrency, MaxAttempts: r.spec.MaxAttempts,
			RetryWithMoreMemory: r.spec.RetryWithMoreMemory}
		total := r.rec.Total
		counted := 0
		args := func(yield func(rawArg) bool) {
			for a := range r.args {
				counted++
				if !yield(a) {
					return
				}
			}
			if total < 0 {
				n := counted
				rc.mutate(func(rec *journal.Record) { rec.Total = n })
			}
		}
		m, err := startMap(ctx, context.WithoutCancel(ctx), rawFunc(wireFunc(r.rec.Function)), args, total, r.host, mo)
		if err != nil {
			return fail(err)
		}
		setCancel(m.Cancel)
		setLog(m.LogFile())
		failed := false
		for tr := range m.AsCompleted() {
			res := journal.Result{Task: tr.TaskID, Attempt: tr.Attempt, Value: tr.Value, Err: r.failure(tr.Err, m.ID()),
				Worker: tr.Worker, Machine: tr.Machine, Nanos: int64(tr.Duration), Peak: tr.PeakMemoryBytes}
			if tr.Err != nil {
				failed = true
			}
			emit(res)
		}
		if r.local != nil {
			r.local.close()
		}
		state := JobSucceeded
		if failed {
			state = JobFailed
		}
		return final(state, nil, nil)
	}
	return fail(fmt.Errorf("meadowrun: job %s has unknown kind %q", id, r.rec.Kind))
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
		if !strings.HasPrefix(kv, worker.EnvWorkerPrefix) && !strings.HasPrefix(kv, envSupervise) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, envSupervise+"="+id, envSuperviseState+"="+st.Dir())
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

// isSupervisorProcess reports whether this process was started to
// supervise a job.
func isSupervisorProcess() bool { return os.Getenv(envSupervise) != "" }

// supervise is the main of a supervisor process; it returns the exit code.
func supervise() int {
	id, dir := os.Getenv(envSupervise), os.Getenv(envSuperviseState)
	// Nothing this process starts is a supervisor.
	os.Unsetenv(envSupervise)
	os.Unsetenv(envSuperviseState)
	ack := os.NewFile(superviseAckFD, "meadowrun-ack")
	syscall.CloseOnExec(superviseAckFD)
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
	// Cancel (from any process) sends SIGTERM; so does a shutdown.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)

	st := journal.New(dir, journal.Options{})
	rec, err := st.Commit(ctx, id, nil, func(r *journal.Record) error {
		if r.State != JobSubmitted {
			return fmt.Errorf("meadowrun: job %s is %s, not waiting for a supervisor", id, r.State)
		}
		r.State, r.PID, r.Proc, r.Started = JobRunning, os.Getpid(), journal.Self(), time.Now()
		return nil
	})
	if err != nil {
		return nack(err)
	}
	var spec durableSpec
	if err := json.Unmarshal(rec.Spec, &spec); err != nil {
		err = fmt.Errorf("meadowrun: job %s: decoding its options: %w", id, err)
		st.Commit(ctx, id, nil, func(r *journal.Record) error {
			r.State, r.Error, r.Finished = JobFailed, err.Error(), time.Now()
			return nil
		})
		return nack(err)
	}
	if ack != nil {
		fmt.Fprintln(ack, "ok")
		ack.Close()
	}
	host, err := openSupervisedHost(ctx, rec.Host)
	r := &runner{st: st, rec: rec, spec: spec, host: host, out: io.Discard}
	if rec.Kind == JobMap {
		r.args = journalArgs(ctx, st, id)
	}
	if err != nil {
		err = fmt.Errorf("meadowrun: job %s: %w", id, err)
		r.host = nil
		st.Commit(ctx, id, []journal.Result{{Task: -1, Err: failureOfError(err)}}, func(r *journal.Record) error {
			r.State, r.Error, r.Finished = JobFailed, err.Error(), time.Now()
			return nil
		})
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	err = r.run(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The supervisor's own log is kept only when it says something.
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
		os.Remove(filepath.Join(logDirOf(spec), id+".supervisor.log"))
	}
	return 0
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

// journalArgs reads a map's arguments from the journal, a chunk at a time.
// Reads are not cut short when the job is cancelled (ctx's values are kept,
// not its cancellation): a cancelled read would pass for an argument that
// failed to encode, and the feeder tells a job stopped early by reading on.
func journalArgs(ctx context.Context, st *journal.Store, id string) iter.Seq[rawArg] {
	const chunk = 4096
	ctx = context.WithoutCancel(ctx)
	return func(yield func(rawArg) bool) {
		for i := 0; ; {
			args, err := st.Args(ctx, id, i, chunk)
			if err != nil {
				yield(rawArg{err: fmt.Errorf("reading the argument from the journal: %w", err)})
				return
			}
			for _, a := range args {
				if !yield(rawArg{b: a}) {
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
