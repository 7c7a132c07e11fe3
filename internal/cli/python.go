package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun"
)

// pythonFlags are map's flags for a Python function.
type pythonFlags struct {
	on          bool
	interpreter string
}

func (p *pythonFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&p.on, "python", false, "map the Python function named package.module.function (given instead of a command) over the inputs, parsed as JSON")
	cmd.Flags().StringVar(&p.interpreter, "interpreter", "python3", "with --python: the Python interpreter of the workers")
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
	if w.detach {
		return usagef(cmd, "--detach is not supported with --python yet")
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
	if w.image != "" {
		repo, tag, digest := splitImage(w.image)
		if digest != "" {
			return usagef(cmd, "--python runs in an image named by tag, not by digest, for now")
		}
		if _, err := w.deployment(cmd); err != nil {
			return err
		}
		var secret meadowrun.Secret
		if w.regUser != "" {
			secret = meadowrun.SecretFromEnv(w.regUser, w.regPass)
		}
		dep = meadowrun.ContainerInterpreter(repo, tag, secret)
	}
	taskOut := &lockedWriter{w: &commandOutput{out: s.err, errs: s.err, keep: true}}
	opts := &meadowrun.MapOptions{
		Options:     meadowrun.Options{Resources: w.resources(cmd), Output: taskOut, Deployment: dep},
		Concurrency: jobs, MaxAttempts: maxAttempts, RetryWithMoreMemory: moreMemory,
	}
	fn := meadowrun.Named[json.RawMessage, json.RawMessage](name)
	m, err := meadowrun.SubmitMap(ctx, fn, slices.Collect(func(yield func(json.RawMessage) bool) {
		for _, in := range inputs {
			if !yield(pythonInput(in)) {
				return
			}
		}
	}), host, opts, &meadowrun.SubmitOptions{InProcess: true})
	if err != nil {
		return &exitError{exitInternal, err}
	}
	conc := jobs
	if conc == 0 {
		conc = runtime.NumCPU()
	}
	rep := newMapReport(io.Discard, s.err, false, false, len(inputs), conc)
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
		rep.add(r.TaskID, r.Attempt, r.Err, r.Duration, r.Worker, nil)
	}
	sig := stop()
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
