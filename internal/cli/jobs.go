package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// completeJobs completes job ids, described by their state and command.
func completeJobs(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	jobs, err := meadowrun.ListJobs(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for i := len(jobs) - 1; i >= 0; i-- {
		j := jobs[i]
		if strings.HasPrefix(j.ID, toComplete) {
			out = append(out, fmt.Sprintf("%s\t%s %s %s", j.ID, j.State, j.Kind, what(j)))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// what describes what a job runs.
func what(j meadowrun.JobInfo) string {
	if len(j.Command) > 0 {
		return strings.Join(j.Command, " ")
	}
	return j.Function
}

func newJobsCmd(s *streams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "jobs [JOB...]",
		Short: "List the jobs in the journal",
		Long: `List the jobs in the journal ($XDG_STATE_HOME/meadowrun/journal.db), oldest
first: state (submitted, running, succeeded, failed, cancelled, or lost when the
process running it died), host, start, duration, and tasks done/failed/total.`,
		ValidArgsFunction: completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var jobs []meadowrun.JobInfo
			if len(args) == 0 {
				all, err := meadowrun.ListJobs(ctx)
				if err != nil {
					return err
				}
				jobs = all
			}
			for _, id := range args {
				j, err := meadowrun.GetJob(ctx, id)
				if err != nil {
					return err
				}
				jobs = append(jobs, j)
			}
			if asJSON {
				if jobs == nil {
					jobs = []meadowrun.JobInfo{}
				}
				enc := json.NewEncoder(s.out)
				enc.SetIndent("", "  ")
				return enc.Encode(jobs)
			}
			if len(jobs) == 0 {
				fmt.Fprintln(s.err, "meadowrun: no jobs yet")
				return nil
			}
			tw := tabwriter.NewWriter(s.out, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tSTATE\tHOST\tSTARTED\tDURATION\tTASKS\tCOMMAND")
			for _, j := range jobs {
				started := "-"
				if !j.Started.IsZero() {
					started = j.Started.Local().Format(time.DateTime)
				}
				total := "?"
				if j.Tasks >= 0 {
					total = fmt.Sprint(j.Tasks)
				}
				state := string(j.State)
				if j.Kind == "command" && j.ExitCode > 0 {
					state += fmt.Sprintf(" (%d)", j.ExitCode)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d/%s\t%s\n", j.ID, j.Kind, state, j.Host, started,
					duration(j.Duration()), j.Done, j.Failed, total, shorten(what(j), 60))
				// A map split across machines: a line per machine's part.
				for _, p := range j.Parts {
					fmt.Fprintf(tw, "  %s\tpart\t%s\t%s\t\t\t%d/%d/%d\t%s\n", p.ID, p.State, p.Machine, p.Done, p.Failed, p.Tasks, shorten(p.Error, 60))
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the jobs as a JSON array")
	cmd.AddCommand(newJobsImportCmd(s))
	return cmd
}

func duration(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func newLogsCmd(s *streams) *cobra.Command {
	var (
		tasks  []int
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "logs JOB",
		Short: "Print a job's output",
		Long: `Print a job's output as its log keeps it: each line prefixed with its task
("[task N] "), and meadowrun's own lines ("[meadowrun] ", "[worker wN] ").
--task keeps the lines of one task (repeatable), without the prefix when
there is one; -f follows the output until the job ends. A job that was
cancelled, or lost before printing anything, says so on stderr.`,
		Args:              exactArgs(1, "a job id"),
		ValidArgsFunction: completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			j, err := meadowrun.GetJob(ctx, args[0])
			if err != nil {
				return err
			}
			opts := &meadowrun.LogOptions{Tasks: tasks, Follow: follow, Bare: j.Kind != "map" || len(tasks) == 1}
			out := &countingWriter{w: s.out}
			if err := meadowrun.JobLog(ctx, args[0], out, opts); err != nil {
				return err
			}
			if follow {
				// The job has ended since.
				if j, err = meadowrun.GetJob(ctx, args[0]); err != nil {
					return err
				}
			}
			switch {
			case j.State == meadowrun.JobCancelled && out.n == 0:
				fmt.Fprintf(s.err, "meadowrun: job %s was cancelled before it printed anything\n", j.ID)
			case j.State == meadowrun.JobCancelled:
				fmt.Fprintf(s.err, "meadowrun: job %s was cancelled\n", j.ID)
			case out.n == 0 && j.State == meadowrun.JobLost:
				fmt.Fprintf(s.err, "meadowrun: job %s was lost before it printed anything\n", j.ID)
			}
			return nil
		},
	}
	cmd.Flags().IntSliceVarP(&tasks, "task", "t", nil, "only this task's lines (repeatable)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing output until the job ends")
	return cmd
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func newAttachCmd(s *streams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "attach JOB",
		Short: "Wait for a job, streaming its output, then print its results",
		Long: `Attach to a job from any shell: stream its output (from the start), wait until
it ends, print its results, and exit with its status, as run or map would have:
a command's exit code; for a map, 1 if any task failed; for a function, its
result as JSON (exit 1 if it failed); 130 if the job was cancelled. A finished
job's results are printed at once, with the job's own duration. Interrupting
attach leaves the job running.`,
		Args:              exactArgs(1, "a job id"),
		ValidArgsFunction: completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			id := args[0]
			j, err := meadowrun.GetJob(ctx, id)
			if err != nil {
				return err
			}
			switch j.Kind {
			case "command":
				d, err := meadowrun.AttachCommand(ctx, id)
				if err != nil {
					return err
				}
				out := io.Writer(&commandOutput{out: s.out, errs: s.err})
				if asJSON {
					out = &commandOutput{out: s.err, errs: s.err}
				}
				if err := meadowrun.JobLog(ctx, id, out, &meadowrun.LogOptions{Follow: true}); err != nil && !errors.Is(err, meadowrun.ErrJobLost) {
					return err
				}
				jc, err := d.Wait(ctx)
				return commandExit(s, id, asJSON, jc, err, nil)
			case "map":
				return attachMap(ctx, s, j, asJSON)
			}
			d, err := meadowrun.Attach[[]byte](ctx, id)
			if err != nil {
				return err
			}
			if err := meadowrun.JobLog(ctx, id, s.err, &meadowrun.LogOptions{Follow: true}); err != nil && !errors.Is(err, meadowrun.ErrJobLost) {
				return err
			}
			v, err := d.Wait(ctx)
			if errors.Is(err, context.Canceled) {
				return &exitError{exitCancelled, err}
			} else if err != nil {
				return &exitError{exitFailed, err}
			}
			if j.ResultCodec != "json" && asJSON {
				v, _ = json.Marshal(string(v))
			}
			s.out.Write(v)
			if len(v) == 0 || v[len(v)-1] != '\n' {
				fmt.Fprintln(s.out)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print results as JSON lines on stdout (output goes to stderr)")
	return cmd
}

// attachMap follows a map's output and results.
func attachMap(ctx context.Context, s *streams, j meadowrun.JobInfo, asJSON bool) error {
	// Results as encoded, whatever the function's codec: JSON ones as
	// they are, others (text, bytes) as JSON strings.
	m, err := meadowrun.AttachMap[[]byte](ctx, j.ID)
	if err != nil {
		if !errors.Is(err, meadowrun.ErrRegistryMismatch) {
			return err
		}
		return &exitError{exitFailed, err}
	}
	outW := s.out
	if asJSON {
		outW = s.err
	}
	rep := newMapReport(s.out, s.err, asJSON, j.Function == meadowrun.Commands.Name(), j.Tasks, runtime.NumCPU())
	if !j.Started.IsZero() {
		rep.start = j.Started // for the progress bar's rate while the job runs
	}
	taskOut := &lockedWriter{w: &commandOutput{out: outW, errs: s.err, keep: true}}
	if rep.bar != nil && isTerminal(outW) {
		taskOut.before, taskOut.after = rep.clear, rep.redraw
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		meadowrun.JobLog(ctx, j.ID, taskOut, &meadowrun.LogOptions{Tasks: nil, Follow: true})
	})
	for r := range m.AsCompleted(ctx) {
		if r.TaskID < 0 && errors.Is(r.Err, meadowrun.ErrJobLost) {
			rep.add(-1, 0, r.Err, 0, "", nil)
			continue
		}
		v := r.Value
		if j.ResultCodec != "json" && len(v) > 0 {
			v, _ = json.Marshal(string(v))
		}
		rep.add(r.TaskID, r.Attempt, r.Err, r.Duration, r.Worker, v)
	}
	wg.Wait()
	// The summary is the job's own: its duration and its task count, not
	// the time since it started nor only the tasks that reported.
	info, err := m.Info(ctx)
	if err != nil {
		info = j
	}
	rep.mu.Lock()
	rep.ended = &info
	rep.mu.Unlock()
	return rep.finish(j.ID)
}

func newCancelCmd(s *streams) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel JOB...",
		Short: "Cancel jobs",
		Long: `Cancel running jobs from any shell: their workers are stopped and the journal
records them as cancelled. The results of tasks that had finished are kept.
Cancelling a finished job is an error.`,
		Args:              minArgs(1, "one or more job ids"),
		ValidArgsFunction: completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, id := range args {
				if err := meadowrun.CancelJob(cmd.Context(), id); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(s.out, "cancelled %s\n", id)
			}
			return errors.Join(errs...)
		},
	}
}

func newVersionCmd(s *streams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print meadowrun's version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := map[string]any{"version": "(unknown)", "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH,
				"protocol": wire.Version, "state_dir": meadowrun.StateDir()}
			if bi, ok := debug.ReadBuildInfo(); ok {
				v["version"] = bi.Main.Version
				for _, st := range bi.Settings {
					if st.Key == "vcs.revision" {
						v["revision"] = st.Value
					}
				}
			}
			if asJSON {
				return json.NewEncoder(s.out).Encode(v)
			}
			fmt.Fprintf(s.out, "meadowrun %s (%s, %s, wire protocol %d)\n", v["version"], v["go"], v["platform"], v["protocol"])
			if r, ok := v["revision"]; ok {
				fmt.Fprintf(s.out, "revision %s\n", r)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// newJobsImportCmd copies jobs kept by a host into this machine's
// journal (meadowrun.ImportJob).
func newJobsImportCmd(s *streams) *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "import --host URL JOB...",
		Short: "Copy jobs that a host keeps into this machine's journal",
		Long: `import copies the record of each JOB, kept by the host, into this machine's
journal, so that jobs, logs, attach and cancel follow it here as on the machine
that submitted it. The host must keep its jobs itself and find them by id: a
Kubernetes host with a jobs volume (k8s://...&jobs_volume=PVC), opened with a
kubeconfig of this machine. A job the journal has already is left as it is.`,
		Example: `  meadowrun jobs import --host 'k8s://prod?namespace=batch&jobs_volume=meadowrun-jobs' 20261204T010203-12-3
  meadowrun attach 20261204T010203-12-3`,
		Args: minArgs(1, "one job id or more"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if host == "" {
				return usagef(cmd, "--host is needed: the URL of the host that keeps the jobs (k8s://CONTEXT?namespace=NS&jobs_volume=PVC), or $MEADOWRUN_HOST")
			}
			ctx := cmd.Context()
			h, err := meadowrun.OpenHost(ctx, host)
			if err != nil {
				return err
			}
			defer h.Close()
			for _, id := range args {
				j, err := meadowrun.ImportJob(ctx, h, id)
				if err != nil {
					return fmt.Errorf("importing job %s: %w", id, err)
				}
				fmt.Fprintf(s.out, "%s\t%s\t%s\n", j.ID, j.State, j.Machine)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", os.Getenv("MEADOWRUN_HOST"), "the host that keeps the jobs, as a URL; $MEADOWRUN_HOST sets the default")
	return cmd
}
