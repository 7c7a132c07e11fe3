package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun"
)

func newRunCmd(s *streams) *cobra.Command {
	var (
		w           workFlags
		pyEnv       envFlags
		maxAttempts int
		contextVars string
	)
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARGS...]",
		Short: "Run a command on a worker and stream its output",
		Long: `Run a command (no shell) on a worker of the host, stream its output (stdout and
stderr, merged) and exit with the command's own exit code: 127 when it is not
found, 128+n when signal n killed it, 125 when meadowrun itself failed, 130
when the job was cancelled. Ctrl-C, SIGTERM and SIGHUP (the terminal closed)
cancel the job.

With --requirements FILE (or --poetry DIR, --conda-env-file FILE) the command
runs in a Python environment that each machine builds once and keeps: its
bin directory first on PATH and VIRTUAL_ENV set, so that python is the
environment's (--python-version, the pip flags as for map --python).

With --context-variables '{"k": "v"}' the command finds that JSON object in
MEADOWRUN_CONTEXT_VARIABLES (the reference's context_variables).

With --detach the job is submitted and its id printed: it runs on after this
shell exits; follow it with meadowrun attach, logs or cancel.`,
		Example: `  meadowrun run -- python train.py --epochs 3
  meadowrun run --memory 4 --max-attempts 3 -- ./flaky-job
  meadowrun run --detach -- sleep 600
  meadowrun run --requirements requirements.txt -- python train.py`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			argv, err := afterDash(cmd, args, "meadowrun run -- echo hello")
			if err != nil {
				return err
			}
			env, err := w.checkWork(cmd, maxAttempts, nil)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			host, err := w.openHost(ctx)
			if err != nil {
				return &exitError{exitInternal, err}
			}
			var out io.Writer = &commandOutput{out: s.out, errs: s.err}
			if w.json {
				out = &commandOutput{out: s.err, errs: s.err}
			}
			dep, err := w.deployment(cmd)
			if err != nil {
				return err
			}
			envDep, isEnv, err := pyEnv.environment(cmd, nil, w.image)
			if err != nil {
				return err
			}
			if isEnv {
				dep = envDep
			}
			vars, err := contextVariables(cmd, contextVars)
			if err != nil {
				return err
			}
			o, err := w.options(cmd, out, dep)
			if err != nil {
				return err
			}
			opts := &meadowrun.CommandOptions{Options: o, Env: env, ContextVariables: vars}
			d, err := meadowrun.SubmitCommand(ctx, argv, host, opts, &meadowrun.SubmitOptions{MaxAttempts: maxAttempts, InProcess: !w.detach})
			if err != nil {
				return &exitError{exitInternal, err}
			}
			if w.detach {
				return printSubmitted(s, d.ID(), w.json)
			}
			stop := cancelOnSignal(ctx, s, d.ID(), d.Cancel)
			jc, err := d.Wait(ctx)
			sig := stop()
			if jc != nil {
				printCost(s, d.ID(), jc.CostUSD)
			}
			return commandExit(s, d.ID(), w.json, jc, err, sig)
		},
	}
	w.add(cmd.Flags())
	cmd.Flags().IntVar(&maxAttempts, "max-attempts", 1, "times the command is tried in all when it fails")
	cmd.Flags().StringVar(&contextVars, "context-variables", "", "a JSON object the command finds in $MEADOWRUN_CONTEXT_VARIABLES")
	pyEnv.add(cmd, "")
	return cmd
}

// contextVariables parses --context-variables: empty, or a JSON object.
func contextVariables(cmd *cobra.Command, s string) (map[string]any, error) {
	if s == "" {
		return nil, nil
	}
	var vars map[string]any
	if err := json.Unmarshal([]byte(s), &vars); err != nil || vars == nil {
		return nil, usagef(cmd, "--context-variables %q: want a JSON object, e.g. '{\"k\": \"v\"}'", s)
	}
	return vars, nil
}

// printSubmitted reports a detached job's id: alone on stdout (or as
// JSON), with a hint on stderr.
func printSubmitted(s *streams, id string, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(s.out).Encode(map[string]string{"id": id})
	}
	fmt.Fprintln(s.out, id)
	fmt.Fprintf(s.err, "meadowrun: job %s submitted; follow it with: meadowrun attach %s\n", id, id)
	return nil
}

// cancelOnSignal cancels the job on SIGINT, SIGTERM or SIGHUP (the
// terminal was closed: the job is cancelled as with Ctrl-C rather than left
// to be lost; run it with --detach to have it go on); the function it
// returns stops listening and says which signal came, if any.
func cancelOnSignal(ctx context.Context, s *streams, id string, cancel func(context.Context) error) func() os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	got := make(chan os.Signal, 1)
	go func() {
		select {
		case sig := <-ch:
			got <- sig
			fmt.Fprintf(s.err, "\nmeadowrun: %s: cancelling job %s\n", sig, id)
			c, stop := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
			defer stop()
			cancel(c)
		case <-done:
		}
	}()
	return func() os.Signal {
		signal.Stop(ch)
		close(done)
		select {
		case sig := <-got:
			return sig
		default:
			return nil
		}
	}
}

// signalExit is the conventional exit code of a process ended by sig.
func signalExit(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return exitFailed
}

// commandExit turns a command job's completion into the CLI's exit.
func commandExit(s *streams, id string, asJSON bool, jc *meadowrun.JobCompletion, err error, sig os.Signal) error {
	var je *meadowrun.JournalError
	journalErr := errors.As(err, &je)
	if asJSON {
		out := map[string]any{"id": id, "exit_code": -1}
		if jc != nil {
			out["exit_code"], out["duration_s"], out["log_file"] = jc.ReturnCode, jc.Duration.Seconds(), jc.LogFile
		}
		if err != nil {
			out["error"] = err.Error()
		}
		json.NewEncoder(s.out).Encode(out)
	}
	if sig != nil {
		return &exitError{code: signalExit(sig)}
	}
	var te *meadowrun.TaskError
	isTask := errors.As(err, &te)
	if jc != nil && jc.ReturnCode != 0 {
		if isTask && te.Kind == meadowrun.KindCrash && !asJSON {
			fmt.Fprintf(s.err, "meadowrun: %s\n", te.Message)
		}
		if journalErr {
			printError(s.err, je)
		}
		return &exitError{code: jc.ReturnCode}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return &exitError{exitCancelled, fmt.Errorf("meadowrun: job %s was cancelled", id)}
		}
		return &exitError{exitInternal, err}
	}
	return nil
}
