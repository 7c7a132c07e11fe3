package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun"
)

// mapReport follows a map's results: a progress bar on a terminal, plain
// progress lines otherwise, JSON lines with --json, and at the end a
// summary that lists the failed tasks.
type mapReport struct {
	out, errs   io.Writer
	asJSON      bool
	commands    bool // a map of commands: results are exit codes
	total       int  // -1 while unknown
	concurrency int
	input       func(task int) (string, bool)

	mu    sync.Mutex
	start time.Time
	// ended, when set, is the job's own outcome, as the journal has it (a
	// job attached to after it began, or lost): its duration and state
	// replace this process's clock.
	ended     *meadowrun.JobInfo
	done      int
	cancelled int
	notRun    int
	failed    []failure
	jobErrs   []string
	bar       *os.File // the terminal the bar is drawn on, nil for none
	width     int
	shown     bool
	drawn     time.Time
	plainAt   time.Time
	stopTick  chan struct{}
}

type failure struct {
	task    int
	attempt int
	msg     string
}

// plainEvery is how often a progress line is printed when stderr is not a
// terminal.
const plainEvery = 10 * time.Second

func newMapReport(out, errs io.Writer, asJSON, commands bool, total, concurrency int) *mapReport {
	r := &mapReport{out: out, errs: errs, asJSON: asJSON, commands: commands, total: total, concurrency: concurrency,
		start: time.Now(), plainAt: time.Now(), input: func(int) (string, bool) { return "", false }}
	if f, ok := errs.(*os.File); ok && termIsTerminal(int(f.Fd())) {
		r.bar, r.width = f, termWidth(int(f.Fd()))
		r.stopTick = make(chan struct{})
		go r.tick()
	}
	return r
}

func (r *mapReport) tick() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.mu.Lock()
			r.drawLocked()
			r.mu.Unlock()
		case <-r.stopTick:
			return
		}
	}
}

// clear and redraw wrap writes of task output to the same terminal.
func (r *mapReport) clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shown {
		fmt.Fprint(r.bar, "\r\x1b[K")
		r.shown = false
	}
}

func (r *mapReport) redraw() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drawLocked()
}

// add records one result. value is the task's result, as JSON; cost its
// share of the job's cost, in US dollars.
func (r *mapReport) add(task, attempt int, err error, d time.Duration, worker string, cost float64, value []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if task < 0 {
		if err != nil {
			r.jobErrs = append(r.jobErrs, err.Error())
		}
		return
	}
	var te *meadowrun.TaskError
	msg := ""
	switch {
	case err == nil:
		r.done++
	case errors.As(err, &te):
		msg = te.Kind.String()
		if te.Message != "" {
			msg = te.Message
		}
		r.failed = append(r.failed, failure{task, attempt, msg})
	case errors.Is(err, context.Canceled):
		r.cancelled++
		msg = "cancelled"
	default:
		// An error of the whole job, shared by every task it stopped.
		r.notRun++
		msg = err.Error()
		if !slices.Contains(r.jobErrs, msg) {
			r.jobErrs = append(r.jobErrs, msg)
		}
	}
	if r.asJSON {
		line := map[string]any{"task": task, "attempt": attempt, "ok": err == nil, "duration_s": d.Seconds(), "worker": worker}
		if in, ok := r.input(task); ok {
			line["input"] = in
		}
		if cost > 0 {
			line["cost_usd"] = cost
		}
		if r.commands {
			code, _ := meadowrun.CommandExitCode(err)
			line["exit_code"] = code
		} else if err == nil && len(value) > 0 {
			line["value"] = json.RawMessage(value)
		}
		if err != nil {
			line["error"] = msg
			if te != nil && !r.commands {
				// A function's error as the worker described it: the
				// remote exception's type and traceback.
				line["error_kind"] = te.Kind.String()
				if te.Type != "" {
					line["error_type"] = te.Type
				}
				if te.Stack != "" {
					line["traceback"] = te.Stack
				}
			}
		}
		b, _ := json.Marshal(line)
		if r.shown {
			fmt.Fprint(r.bar, "\r\x1b[K")
			r.shown = false
		}
		r.out.Write(append(b, '\n'))
	}
	if r.bar != nil {
		if time.Since(r.drawn) > 50*time.Millisecond {
			r.drawLocked()
		}
	} else if time.Since(r.plainAt) >= plainEvery {
		r.plainAt = time.Now()
		fmt.Fprintf(r.errs, "meadowrun: %s\n", r.statusLocked())
	}
}

func (r *mapReport) statusLocked() string {
	finished := r.done + len(r.failed) + r.cancelled + r.notRun
	el := time.Since(r.start)
	rate := float64(finished) / max(el.Seconds(), 1e-9)
	var b strings.Builder
	if r.total >= 0 {
		fmt.Fprintf(&b, "%d/%d done", finished, r.total)
	} else {
		fmt.Fprintf(&b, "%d done", finished)
	}
	fmt.Fprintf(&b, ", %d failed", len(r.failed))
	if r.total >= 0 {
		running := min(r.concurrency, r.total-finished)
		fmt.Fprintf(&b, ", %d running", max(running, 0))
	}
	fmt.Fprintf(&b, ", %.1f/s", rate)
	if r.total >= 0 && finished > 0 && finished < r.total {
		eta := time.Duration(float64(r.total-finished) / rate * float64(time.Second))
		fmt.Fprintf(&b, ", ETA %s", eta.Round(time.Second))
	}
	return b.String()
}

func (r *mapReport) drawLocked() {
	if r.bar == nil {
		return
	}
	r.drawn = time.Now()
	status := r.statusLocked()
	line := status
	if r.total > 0 {
		w := max(10, min(40, r.width-len(status)-4))
		fill := min(w, w*(r.done+len(r.failed)+r.cancelled+r.notRun)/r.total)
		line = "[" + strings.Repeat("#", fill) + strings.Repeat(".", w-fill) + "] " + status
	}
	if len(line) >= r.width {
		line = line[:r.width-1]
	}
	fmt.Fprint(r.bar, "\r\x1b[K"+line)
	r.shown = true
}

// finish prints the summary and returns the exit error: nil when every
// task succeeded.
func (r *mapReport) finish(id string) error {
	if r.stopTick != nil {
		close(r.stopTick)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shown {
		fmt.Fprint(r.bar, "\r\x1b[K")
		r.shown = false
	}
	fmt.Fprintf(r.errs, "meadowrun: job %s: %s\n", id, r.summaryLocked())
	for _, e := range r.jobErrs {
		printError(r.errs, errors.New(e))
	}
	slices.SortFunc(r.failed, func(a, b failure) int { return a.task - b.task })
	if len(r.failed) > 0 {
		fmt.Fprintf(r.errs, "meadowrun: %s failed:\n", plural(len(r.failed), "task", "tasks"))
		for i, f := range r.failed {
			if i == 20 {
				fmt.Fprintf(r.errs, "  ... and %d more (meadowrun attach %s --json lists them all)\n", len(r.failed)-20, id)
				break
			}
			in := ""
			if s, ok := r.input(f.task); ok {
				in = fmt.Sprintf(" (input %q)", s)
			}
			fmt.Fprintf(r.errs, "  task %d%s, attempt %d: %s\n", f.task, in, f.attempt, firstLine(f.msg))
		}
		fmt.Fprintf(r.errs, "meadowrun: see a task's output with: meadowrun logs %s --task %d\n", id, r.failed[0].task)
	}
	switch {
	case r.cancelled > 0 || r.ended != nil && r.ended.State == meadowrun.JobCancelled:
		return &exitError{code: exitCancelled}
	case len(r.failed) > 0 || len(r.jobErrs) > 0 || r.lostLocked():
		return &exitError{code: exitFailed}
	}
	return nil
}

func (r *mapReport) lostLocked() bool { return r.ended != nil && r.ended.State == meadowrun.JobLost }

// summaryLocked says how many tasks the job has, how each ended and how
// long the job took: "4 tasks, 3 succeeded, 1 failed in 1.2s (3.3
// tasks/s)". Tasks that never reported are counted as unfinished; a lost
// job has no duration.
func (r *mapReport) summaryLocked() string {
	finished := r.done + len(r.failed) + r.cancelled + r.notRun
	total := finished
	if r.ended != nil && r.ended.Tasks > total {
		total = r.ended.Tasks
	} else if r.total > total {
		total = r.total
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d succeeded, %d failed", plural(total, "task", "tasks"), r.done, len(r.failed))
	if r.cancelled > 0 {
		fmt.Fprintf(&b, ", %d cancelled", r.cancelled)
	}
	if r.notRun > 0 {
		fmt.Fprintf(&b, ", %d not run", r.notRun)
	}
	if n := total - finished; n > 0 {
		fmt.Fprintf(&b, ", %d unfinished", n)
	}
	var took time.Duration
	switch {
	case r.lostLocked():
		b.WriteString(" (the job was lost)")
		return b.String()
	case r.ended == nil:
		took = time.Since(r.start)
	case !r.ended.Started.IsZero() && !r.ended.Finished.IsZero():
		took = r.ended.Finished.Sub(r.ended.Started)
	default:
		return b.String()
	}
	fmt.Fprintf(&b, " in %s (%.1f tasks/s)", took.Round(time.Millisecond), float64(finished)/max(took.Seconds(), 1e-9))
	return b.String()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
