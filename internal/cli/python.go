package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun"
)

// pythonFlags are map's flags for a Python function.
type pythonFlags struct {
	on           bool
	functionFile string
	globs        []string
	interpreter  string
	envFlags
}

// envFlags name a Python environment that each machine builds once and
// keeps: map --python's functions, or run's command, run in it.
type envFlags struct {
	requirements  string // PipRequirementsFile
	poetry        string // PoetryProjectPath
	condaFile     string // CondaEnvironmentFile
	pythonVersion string
	pip           meadowrun.PipOptions
}

func (p *pythonFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.functionFile, "function-file", "", "with --python: read the function's name from this file instead of the command line (for a long \"cloudpickle:BASE64\" name)")
	f.StringArrayVar(&p.globs, "glob", nil, "with --python: files (relative to the working directory; a directory brings everything under it) that remote machines copy into the workers' working directory, from which the function is imported (repeatable)")
	f.BoolVar(&p.on, "python", false, "map the Python function named package.module.function (given instead of a command) over the inputs, parsed as JSON")
	f.StringVar(&p.interpreter, "interpreter", "python3", "with --python: the Python interpreter of the workers")
	p.envFlags.add(cmd, "with --python: ")
}

// add adds the environment flags; what prefixes their help.
func (p *envFlags) add(cmd *cobra.Command, what string) {
	f := cmd.Flags()
	f.StringVar(&p.requirements, "requirements", "", what+"run in a virtualenv with this requirements file installed, built once per machine")
	f.StringVar(&p.poetry, "poetry", "", what+"run in a virtualenv with the packages of this poetry project's poetry.lock")
	f.StringVar(&p.condaFile, "conda-env-file", "", what+"run in a conda environment created from this file (the machines need conda)")
	f.StringVar(&p.pythonVersion, "python-version", "", "with --requirements or --poetry: the Python version of the virtualenv, as 3.11 (default: the machine's python3)")
	f.StringVar(&p.pip.IndexURL, "index-url", "", "pip's --index-url for the environment")
	f.StringArrayVar(&p.pip.ExtraIndexURLs, "extra-index-url", nil, "pip's --extra-index-url for the environment (repeatable)")
	f.StringArrayVar(&p.pip.FindLinks, "find-links", nil, "pip's --find-links for the environment, a directory or page on the machines (repeatable)")
	f.BoolVar(&p.pip.NoIndex, "no-index", false, "pip's --no-index for the environment: --find-links only")
}

// environment returns the deployment of an environment flag, with env,
// or ok false when none was given; image is --image's, which brings its
// own environment.
func (p *envFlags) environment(cmd *cobra.Command, env map[string]string, image string) (d meadowrun.Deployment, ok bool, err error) {
	var set []string
	for _, name := range []string{"requirements", "poetry", "conda-env-file"} {
		if cmd.Flags().Changed(name) {
			set = append(set, "--"+name)
		}
	}
	pipSet := p.pip.IndexURL != "" || len(p.pip.ExtraIndexURLs) > 0 || len(p.pip.FindLinks) > 0 || p.pip.NoIndex
	switch {
	case len(set) > 1:
		return d, false, usagef(cmd, "%s: give one environment", strings.Join(set, " and "))
	case len(set) == 0:
		if pipSet || p.pythonVersion != "" {
			return d, false, usagef(cmd, "--python-version and the pip flags go with --requirements or --poetry")
		}
		return d, false, nil
	case cmd.Flags().Changed("interpreter"):
		return d, false, usagef(cmd, "--interpreter and %s: the environment has its own interpreter", set[0])
	case image != "":
		return d, false, usagef(cmd, "--image and an environment flag: a container image brings its own environment")
	}
	switch {
	case p.requirements != "":
		d = meadowrun.PipRequirementsFile(p.requirements, p.pythonVersion)
	case p.poetry != "":
		d = meadowrun.PoetryProjectPath(p.poetry, p.pythonVersion)
	default:
		if pipSet || p.pythonVersion != "" {
			return d, false, usagef(cmd, "--python-version and the pip flags go with --requirements or --poetry; a conda file names its Python and channels")
		}
		d = meadowrun.CondaEnvironmentFile(p.condaFile)
	}
	if pipSet {
		d = d.WithPipOptions(p.pip)
	}
	return d.WithEnv(env), true, nil
}

// pythonInput is one input of a Python map as the function's JSON
// argument: the input itself when it is JSON, otherwise the input as a
// JSON string.
func pythonInput(in string) json.RawMessage {
	if json.Valid([]byte(in)) {
		return json.RawMessage(in)
	}
	b, _ := json.Marshal(in)
	return b
}

// runPythonMap runs `meadowrun map --python NAME ::: INPUT...`: the
// function once per input, results printed one JSON line per task in task
// order, failed tasks listed on stderr.
func runPythonMap(cmd *cobra.Command, s *streams, w *workFlags, py *pythonFlags, args []string, jobs, maxAttempts int, moreMemory bool) error {
	example := "meadowrun map --python pkg.module.function ::: 1 2 3"
	if py.functionFile != "" {
		b, err := os.ReadFile(py.functionFile)
		if err != nil {
			return usagef(cmd, "--function-file: %v", err)
		}
		name := strings.TrimSpace(string(b))
		if name == "" {
			return usagef(cmd, "--function-file %s is empty: write the function's name in it", py.functionFile)
		}
		if len(args) > 0 && args[0] != ":::" {
			return usagef(cmd, "a function name %q and --function-file: give one", args[0])
		}
		args = append([]string{name}, args...)
	}
	if len(args) == 0 {
		return usagef(cmd, "no function given, as in: %s", example)
	}
	name, rest := args[0], args[1:]
	var inputs []string
	switch {
	case len(rest) == 0:
		if isTerminal(s.in) {
			return usagef(cmd, "no inputs: give them after ::: or one per line on stdin, as in: %s", example)
		}
		for in := range lines(s.in) {
			inputs = append(inputs, in)
		}
	case rest[0] != ":::":
		return usagef(cmd, "unexpected %q after the function name: inputs follow :::, as in: %s", rest[0], example)
	default:
		_, in, _, err := splitInputs(cmd, append([]string{name}, rest...))
		if err != nil {
			return err
		}
		inputs = in
	}
	env, err := w.checkWork(cmd, maxAttempts, &jobs)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	host, err := w.openHost(ctx)
	if err != nil {
		return &exitError{exitInternal, err}
	}
	dep := meadowrun.PreinstalledInterpreter(py.interpreter, env)
	envDep, isEnv, err := py.environment(cmd, env, w.image)
	if err != nil {
		return err
	}
	if isEnv {
		dep = envDep
	}
	if w.image != "" {
		repo, tag, digest := splitImage(w.image)
		if _, err := w.deployment(cmd); err != nil {
			return err
		}
		secret := w.secret()
		if digest != "" {
			dep = meadowrun.ContainerInterpreterAtDigest(repo, digest, secret).WithEnv(env)
		} else {
			dep = meadowrun.ContainerInterpreter(repo, tag, secret).WithEnv(env)
		}
	}
	if len(py.globs) > 0 {
		dep = dep.WithGlobs(py.globs...)
	}
	taskOut := &lockedWriter{w: &commandOutput{out: s.err, errs: s.err, keep: true}}
	o, err := w.options(cmd, taskOut, dep)
	if err != nil {
		return err
	}
	opts := &meadowrun.MapOptions{
		Options:     o,
		Concurrency: jobs, MaxAttempts: maxAttempts, RetryWithMoreMemory: moreMemory,
	}
	fn := meadowrun.Named[json.RawMessage, json.RawMessage](name)
	m, err := meadowrun.SubmitMap(ctx, fn, slices.Collect(func(yield func(json.RawMessage) bool) {
		for _, in := range inputs {
			if !yield(pythonInput(in)) {
				return
			}
		}
	}), host, opts, &meadowrun.SubmitOptions{InProcess: !w.detach})
	if err != nil {
		return &exitError{exitInternal, err}
	}
	if w.detach {
		return printSubmitted(s, m.ID(), w.json)
	}
	conc := jobs
	if conc == 0 {
		conc = runtime.NumCPU()
	}
	var rep *mapReport
	if w.json {
		// One JSON line per task as it completes, its value or its error.
		rep = newMapReport(s.out, s.err, true, false, len(inputs), conc)
	} else {
		rep = newMapReport(io.Discard, s.err, false, false, len(inputs), conc)
	}
	rep.input = func(task int) (string, bool) {
		if task < len(inputs) {
			return inputs[task], true
		}
		return "", false
	}
	stop := cancelOnSignal(ctx, s, m.ID(), m.Cancel)
	values := make([]json.RawMessage, len(inputs))
	ok := make([]bool, len(inputs))
	var journalErr error
	for r := range m.AsCompleted(ctx) {
		if isJournalError(r.TaskID, r.Err) {
			journalErr = r.Err
			continue
		}
		if r.TaskID >= 0 && r.TaskID < len(values) && r.Err == nil {
			values[r.TaskID], ok[r.TaskID] = r.Value, true
		}
		var value []byte
		if r.Err == nil {
			var b bytes.Buffer
			if json.Compact(&b, r.Value) == nil {
				value = b.Bytes()
			}
		}
		rep.add(r.TaskID, r.Attempt, r.Err, r.Duration, r.Worker, r.CostUSD, value)
	}
	sig := stop()
	if w.json {
		return endMap(rep, m.ID(), sig, journalErr)
	}
	// Results in task order; a failed task's line is null.
	for i, v := range values {
		var b bytes.Buffer
		if !ok[i] || json.Compact(&b, v) != nil {
			b.Reset()
			b.WriteString("null")
		}
		fmt.Fprintf(s.out, "%s\n", b.Bytes())
	}
	return endMap(rep, m.ID(), sig, journalErr)
}
