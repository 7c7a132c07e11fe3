// Package cli is the meadowrun command line. It only parses flags and
// arguments and calls the meadowrun library (SubmitCommand, SubmitCommands,
// AttachMap, CancelJob, JobLog, ...), so that a Go program can do
// everything the CLI does.
//
// Exit codes: run and attach of a command exit with the command's own
// code (127 when it was not found); map and attach of a map exit 1 when a
// task failed; 2 means a usage error (unknown flag, missing --, a negative
// --cpu); 125 means meadowrun itself failed where the code is otherwise the
// command's; 130 means the job was cancelled (meadowrun cancel, Ctrl-C),
// and 129 or 143 that run or map was ended by SIGHUP or SIGTERM, which
// cancel the job too; other commands exit 1 on error.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes of meadowrun itself.
const (
	exitFailed   = 1
	exitUsage    = 2
	exitInternal = 125
	// exitCancelled is the code of a job that was cancelled, the code a
	// shell gives a command that Ctrl-C (SIGINT) ended.
	exitCancelled = 130
)

// exitError ends the command with an exit code; err, if not nil, is
// printed first.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError is a mistake in the command line.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.err.Error() }

func usagef(cmd *cobra.Command, format string, a ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, a...)}
}

// streams are the process's standard streams.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

// Main runs the meadowrun command line with args (without the program
// name) and returns the process's exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	s := &streams{in: stdin, out: stdout, err: stderr}
	root := newRoot(s)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	// A usage error is one wherever it is wrapped.
	var ue *usageError
	var ee *exitError
	switch {
	case errors.As(err, &ue):
		cmd = ue.cmd
	case errors.As(err, &ee):
		if ee.err != nil {
			printError(stderr, ee.err)
		}
		return ee.code
	case !isCobraUsage(err):
		printError(stderr, err)
		return exitFailed
	}
	printError(stderr, err)
	if cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return exitUsage
}

// isCobraUsage recognises cobra's own errors about the command line.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "requires at most", "bad flag syntax"} {
		if strings.HasPrefix(msg, p) || strings.Contains(msg, " "+p) {
			return true
		}
	}
	return false
}

func printError(w io.Writer, err error) {
	msg := err.Error()
	if !strings.HasPrefix(msg, "meadowrun") {
		msg = "meadowrun: " + msg
	}
	fmt.Fprintln(w, msg)
}

func newRoot(s *streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "meadowrun",
		Short: "Run commands, functions and maps on this machine or remote workers",
		Long: `meadowrun runs a command, or a command over many inputs, on workers of a host
(this machine by default), with resources requested and enforced, failures
retried, and every job journaled so that it can be listed, attached to,
followed and cancelled from any shell, even after the submitting one is gone.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{cmd: c, err: err} })
	root.AddCommand(newRunCmd(s), newMapCmd(s), newJobsCmd(s), newLogsCmd(s), newAttachCmd(s), newCancelCmd(s), newVersionCmd(s), newAgentCmd(s), newHostsCmd(s), newK8sCmd(s), newEC2Cmd(s))
	return root
}

// noArgs refuses arguments, naming the unknown command.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef(cmd, "unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

// exactArgs wants n arguments.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef(cmd, "%s takes %s, got %d arguments", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

// minArgs wants n arguments or more.
func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef(cmd, "%s takes %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

// afterDash returns the arguments after "--", refusing anything before it.
func afterDash(cmd *cobra.Command, args []string, example string) ([]string, error) {
	at := cmd.ArgsLenAtDash()
	switch {
	case at < 0 && len(args) == 0:
		return nil, usagef(cmd, "no command given: put it after --, as in: %s", example)
	case at < 0:
		return nil, usagef(cmd, "put the command after -- so that its flags are not taken for meadowrun's, as in: %s", example)
	case at > 0:
		return nil, usagef(cmd, "unexpected %q before --: put the whole command after --, as in: %s", args[0], example)
	case len(args) == 0:
		return nil, usagef(cmd, "no command after --, as in: %s", example)
	}
	return args, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && termIsTerminal(int(f.Fd()))
}
