package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun"
)

func newMapCmd(s *streams) *cobra.Command {
	var (
		w           workFlags
		jobs        int
		maxAttempts int
		moreMemory  bool
		py          pythonFlags
	)
	cmd := &cobra.Command{
		Use:   "map [flags] -- COMMAND [ARGS...] [::: INPUT...]\n  meadowrun map --python [flags] PACKAGE.MODULE.FUNCTION [::: INPUT...]",
		Short: "Run a command once per input, in parallel, on workers",
		Long: `Run a command (no shell) once per input, on workers of the host, N at a time.
Inputs come after ::: or, without :::, one per line on stdin. GNU parallel's
placeholders are replaced in the command:

  {}    the input              {/}   its base name       {#}  task number, from 1
  {.}   without extension      {//}  its directory
  {/.}  base name without extension

A command without placeholders gets the input as its last argument. Each
task's output is printed with a "[task N] " prefix (N from 0). A progress bar
(done, failed, running, rate, ETA) is drawn when stderr is a terminal. The
exit code is 1 when any task failed (the failed tasks are listed) and 130
when the job was cancelled; Ctrl-C, SIGTERM and SIGHUP cancel it.

With --python, a Python function named package.module.function runs once
per input on Python workers (--interpreter, python3 by default), imported
from the working directory (or PYTHONPATH). Each input is parsed as JSON,
or taken as a JSON string when it is not JSON, and passed as the function's
single argument. Results are printed on stdout as one JSON line per task, in
task order (null for a failed task); the tasks' output goes to stderr.
--requirements FILE (or --poetry DIR, --conda-env-file FILE) runs them in
an environment that each machine builds once and keeps: a virtualenv of
--python-version (the machine's python3 by default) with the requirements
installed by pip (--index-url, --extra-index-url, --find-links, --no-index).`,
		Example: `  meadowrun map -j 4 -- gzip -k {} ::: *.log
  find . -name '*.png' | meadowrun map --memory 2 -- convert {} {.}.jpg
  meadowrun map --max-attempts 3 --json -- ./score.sh {} ::: a b c
  meadowrun map --python mypkg.stats.mean ::: '[1, 2]' '[3, 4, 5]'
  meadowrun map --python mypkg.stats.mean --requirements requirements.txt ::: '[1, 2]'`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if py.on {
				return runPythonMap(cmd, s, &w, &py, args, jobs, maxAttempts, moreMemory)
			}
			for _, name := range []string{"interpreter", "requirements", "poetry", "conda-env-file", "python-version",
				"index-url", "extra-index-url", "find-links", "no-index", "function-file", "glob"} {
				if cmd.Flags().Changed(name) {
					return usagef(cmd, "--%s is for Python functions: add --python and name the function", name)
				}
			}
			all, err := afterDash(cmd, args, "meadowrun map -- echo {} ::: a b c")
			if err != nil {
				return err
			}
			argv, inputs, hasInputs, err := splitInputs(cmd, all)
			if err != nil {
				return err
			}
			env, err := w.checkWork(cmd, maxAttempts, &jobs)
			if err != nil {
				return err
			}
			if !hasInputs && isTerminal(s.in) {
				return usagef(cmd, "no inputs: give them after ::: or one per line on stdin")
			}
			tmpl := newTemplate(argv)
			if w.isLocal() && !hasPlaceholder(argv[0]) {
				if _, err := exec.LookPath(argv[0]); err != nil {
					return &exitError{127, fmt.Errorf("meadowrun: command not found: %s", argv[0])}
				}
			}
			ctx := cmd.Context()
			host, err := w.openHost(ctx)
			if err != nil {
				return &exitError{exitInternal, err}
			}

			// Inputs are kept to name failed tasks.
			var mu sync.Mutex
			seen := make([]string, 0, len(inputs))
			var source iter.Seq[string] = slices.Values(inputs)
			n := len(inputs)
			if !hasInputs {
				source, n = lines(s.in), -1
			}
			tasks := func(yield func(meadowrun.CommandTask) bool) {
				seq := 0
				for in := range source {
					seq++
					mu.Lock()
					seen = append(seen, in)
					mu.Unlock()
					if !yield(meadowrun.CommandTask{Args: tmpl.expand(in, seq), Env: env}) {
						return
					}
				}
			}
			conc := jobs
			if conc == 0 {
				conc = runtime.NumCPU()
			}
			var rep *mapReport
			outW := s.out
			if w.json {
				outW = s.err
			}
			taskOut := &lockedWriter{w: &commandOutput{out: outW, errs: s.err, keep: true}}
			dep, err := w.deployment(cmd)
			if err != nil {
				return err
			}
			o, err := w.options(cmd, taskOut, dep)
			if err != nil {
				return err
			}
			opts := &meadowrun.MapOptions{
				Options:     o,
				Concurrency: jobs, MaxAttempts: maxAttempts, RetryWithMoreMemory: moreMemory,
			}
			m, err := meadowrun.SubmitCommands(ctx, argv, tasks, n, host, opts, &meadowrun.SubmitOptions{InProcess: !w.detach})
			if err != nil {
				return &exitError{exitInternal, err}
			}
			if w.detach {
				return printSubmitted(s, m.ID(), w.json)
			}
			rep = newMapReport(s.out, s.err, w.json, true, n, conc)
			rep.input = func(task int) (string, bool) {
				mu.Lock()
				defer mu.Unlock()
				if task < len(seen) {
					return seen[task], true
				}
				return "", false
			}
			if rep.bar != nil && isTerminal(outW) {
				taskOut.mu.Lock()
				taskOut.before, taskOut.after = rep.clear, rep.redraw
				taskOut.mu.Unlock()
			}
			stop := cancelOnSignal(ctx, s, m.ID(), m.Cancel)
			var journalErr error
			for r := range m.AsCompleted(ctx) {
				if isJournalError(r.TaskID, r.Err) {
					journalErr = r.Err
					continue
				}
				rep.add(r.TaskID, r.Attempt, r.Err, r.Duration, r.Worker, r.CostUSD, nil)
			}
			err = endMap(rep, m.ID(), stop(), journalErr)
			if usd, ok := m.Cost(); ok {
				printCost(s, m.ID(), usd)
			}
			return err
		},
	}
	w.add(cmd.Flags())
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 0, "tasks run at once, each in its own worker (default: as many as fit)")
	cmd.Flags().IntVar(&maxAttempts, "max-attempts", 1, "times a failing task is tried in all")
	cmd.Flags().BoolVar(&moreMemory, "retry-with-more-memory", false, "give attempt n of a task n times --memory when the previous one ran out of memory")
	py.add(cmd)
	return cmd
}

// isJournalError reports whether a map's result is the job's failure to
// keep its journal rather than a task's outcome.
func isJournalError(taskID int, err error) bool {
	var je *meadowrun.JournalError
	return taskID < 0 && errors.As(err, &je)
}

// endMap prints a map's summary and failed tasks and returns the error
// that gives the command's exit code: the signal that ended it, a
// journal failure, or the tasks' failure.
func endMap(rep *mapReport, id string, sig os.Signal, journalErr error) error {
	err := rep.finish(id)
	switch {
	case sig != nil:
		return &exitError{code: signalExit(sig)}
	case journalErr != nil:
		return &exitError{exitInternal, journalErr}
	}
	return err
}

// splitInputs separates the command from the inputs after :::.
func splitInputs(cmd *cobra.Command, args []string) (argv, inputs []string, found bool, err error) {
	i := slices.Index(args, ":::")
	if j := slices.Index(args, "::::"); j >= 0 && (i < 0 || j < i) {
		return nil, nil, false, usagef(cmd, ":::: (inputs from files) is not supported: give the inputs on stdin, e.g. < file")
	}
	if i < 0 {
		return args, nil, false, nil
	}
	argv, inputs = args[:i], args[i+1:]
	if len(argv) == 0 {
		return nil, nil, false, usagef(cmd, "no command before :::")
	}
	if slices.Contains(inputs, ":::") {
		return nil, nil, false, usagef(cmd, "only one ::: group of inputs is supported")
	}
	if len(inputs) == 0 {
		return nil, nil, false, usagef(cmd, "no inputs after :::")
	}
	return argv, inputs, true, nil
}

// lines yields the lines of r, without their newline.
func lines(r io.Reader) iter.Seq[string] {
	return func(yield func(string) bool) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			if !yield(sc.Text()) {
				return
			}
		}
	}
}
