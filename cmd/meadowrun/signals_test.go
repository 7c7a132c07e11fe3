package main_test

import (
	"bufio"
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// running is a meadowrun process started in the background, its stdout
// read line by line.
type running struct {
	u      *user
	cmd    *exec.Cmd
	lines  *bufio.Scanner
	stderr bytes.Buffer
}

// start starts meadowrun with args, without waiting for it.
func (u *user) start(args ...string) *running {
	u.t.Helper()
	r := &running{u: u, cmd: exec.Command(bin, args...)}
	r.cmd.Env, r.cmd.Dir = u.env, u.dir
	r.cmd.Stderr = &r.stderr
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		u.t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		u.t.Fatal(err)
	}
	u.t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
	})
	r.lines = bufio.NewScanner(out)
	return r
}

// waitLine reads stdout until a line contains s.
func (r *running) waitLine(s string) {
	r.u.t.Helper()
	for r.lines.Scan() {
		if strings.Contains(r.lines.Text(), s) {
			return
		}
	}
	r.u.t.Fatalf("meadowrun ended before printing %q: %v\n%s", s, r.cmd.Wait(), r.stderr.String())
}

// wait waits for the process and returns its exit code and stderr.
func (r *running) wait() (int, string) {
	r.u.t.Helper()
	for r.lines.Scan() {
	}
	err := r.cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, r.stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), r.stderr.String()
	}
	r.u.t.Fatal(err)
	return 0, ""
}

// lastJob is the id of the user's latest job.
func (u *user) lastJob() string {
	u.t.Helper()
	js := u.jobs()
	if len(js) == 0 {
		u.t.Fatal("no jobs")
	}
	return js[len(js)-1]["id"].(string)
}

// jobState is the state of job id.
func (u *user) jobState(id string) string {
	u.t.Helper()
	for _, j := range u.jobs() {
		if j["id"] == id {
			return j["state"].(string)
		}
	}
	u.t.Fatalf("no job %s", id)
	return ""
}

func TestACancelledRunExits130(t *testing.T) {
	u := newUser(t)
	r := u.start("run", "--", "sh", "-c", "echo up; sleep 30")
	r.waitLine("up")
	id := u.lastJob()
	u.want(u.run("", "cancel", id), 0, []string{"cancelled " + id}, nil)
	if code, stderr := r.wait(); code != 130 || !strings.Contains(stderr, "was cancelled") {
		t.Fatalf("run of a job cancelled from another shell: exit %d, stderr %q; want 130, \"was cancelled\"", code, stderr)
	}
	// Its worker was killed with the command running: its result file,
	// and every other temporary file, went with it.
	u.noFilesLeft()
	u.want(u.run("", "attach", id), 130, []string{"up\n"}, []string{"job " + id + " was cancelled"})
}

func TestACancelledMapExits130(t *testing.T) {
	u := newUser(t)
	r := u.start("map", "-j", "1", "--", "sh", "-c", "echo up {}; sleep 30", ":::", "a", "b")
	r.waitLine("up a")
	id := u.lastJob()
	u.want(u.run("", "cancel", id), 0, nil, nil)
	if code, stderr := r.wait(); code != 130 || !strings.Contains(stderr, "cancelled") {
		t.Fatalf("map of a job cancelled from another shell: exit %d, stderr %q; want 130", code, stderr)
	}
	u.noFilesLeft()
	u.want(u.run("", "attach", id), 130, nil, []string{"2 tasks, 0 succeeded, 0 failed"})
}

// Closing the terminal sends SIGHUP: the foreground job is cancelled, as
// with Ctrl-C, rather than left behind as lost.
func TestClosingTheTerminalCancelsTheForegroundJob(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"run", []string{"run", "--", "sh", "-c", "echo up; sleep 30"}},
		{"map", []string{"map", "--", "sh", "-c", "echo up; sleep 30", ":::", "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUser(t)
			r := u.start(tc.args...)
			r.waitLine("up")
			id := u.lastJob()
			r.cmd.Process.Signal(syscall.SIGHUP)
			if code, stderr := r.wait(); code != 128+int(syscall.SIGHUP) || !strings.Contains(stderr, "hangup: cancelling job "+id) {
				t.Fatalf("after SIGHUP: exit %d, stderr %q; want %d", code, stderr, 128+int(syscall.SIGHUP))
			}
			if st := u.jobState(id); st != "cancelled" {
				t.Fatalf("job %s is %s after SIGHUP, want cancelled", id, st)
			}
			u.noFilesLeft()
		})
	}
}

func TestUsageErrorsNameTheFlags(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"a negative --cpu", []string{"run", "--cpu", "-1", "--", "true"}, "--cpu is -1; it must be 0 or more"},
		{"a negative --memory in a map", []string{"map", "--memory", "-2", "--", "true", ":::", "a"}, "--memory is -2"},
		{"a --gpu-memory that is not a number", []string{"run", "--gpu-memory", "NaN", "--", "true"}, "--gpu-memory is NaN"},
		{"an eviction rate over 100", []string{"run", "--max-eviction-rate", "150", "--", "true"}, "--max-eviction-rate is 150%"},
		{"a local host among ssh hosts", []string{"hosts", "--host", "ssh://me@127.0.0.1:1", "--host", "local"},
			`--host "local": only ssh:// hosts can be given several times`},
		{"a local host among ssh hosts of a run", []string{"run", "--host", "ssh://me@127.0.0.1:1", "--host", "local", "--", "true"},
			`--host "local"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newUser(t)
			r := u.run("", tc.args...)
			u.want(r, 2, nil, []string{tc.stderr, "--help"})
			for _, field := range []string{"LogicalCPU", "MemoryGB", "MaxEvictionRate"} {
				if strings.Contains(r.stderr, field) {
					t.Fatalf("the message names the library's field %s: %s", field, r)
				}
			}
		})
	}
}

func TestLogsOfACancelledJobSayItWasCancelled(t *testing.T) {
	u := newUser(t)
	id := strings.TrimSpace(u.run("", "run", "--detach", "--", "sleep", "30").stdout)
	u.want(u.run("", "cancel", id), 0, nil, nil)
	r := u.run("", "logs", id)
	u.want(r, 0, nil, []string{"job " + id + " was cancelled before it printed anything"})
	if r.stdout != "" {
		t.Fatalf("logs printed output the job never had: %s", r)
	}
	p := u.start("run", "--", "sh", "-c", "echo some output; sleep 30")
	p.waitLine("some output")
	id = u.lastJob()
	u.want(u.run("", "cancel", id), 0, nil, nil)
	p.wait()
	u.want(u.run("", "logs", id), 0, []string{"some output\n"}, []string{"job " + id + " was cancelled\n"})
}

// attach prints the job's own duration, the same on every attach, not
// the time since the job began.
func TestAttachReportsTheJobsOwnDuration(t *testing.T) {
	u := newUser(t)
	u.want(u.run("", "map", "--", "true", ":::", "a", "b", "c"), 0, nil, nil)
	j := u.jobs()[0]
	started, _ := time.Parse(time.RFC3339Nano, j["started"].(string))
	finished, _ := time.Parse(time.RFC3339Nano, j["finished"].(string))
	want := "3 tasks, 3 succeeded, 0 failed in " + finished.Sub(started).Round(time.Millisecond).String() + " ("
	for range 2 {
		u.want(u.run("", "attach", j["id"].(string)), 0, nil, []string{want})
	}
}

// A lost map's summary counts every task of the job, not only those that
// reported before it was lost.
func TestAttachToALostMapCountsEveryTask(t *testing.T) {
	u := newUser(t)
	inputs := []string{}
	for i := range 30 {
		inputs = append(inputs, string(rune('A'+i%26))+strings.Repeat("x", i/26))
	}
	r := u.start(append([]string{"map", "-j", "1", "--", "sh", "-c", `echo {#}; [ {#} -le 10 ] || exec sleep 30`, ":::"}, inputs...)...)
	r.waitLine("11")
	id := u.lastJob()
	// The journal records results in group commits; wait for the tenth.
	for deadline := time.Now().Add(30 * time.Second); u.jobs()[0]["done"] != 10.0; {
		if time.Now().After(deadline) {
			t.Fatalf("the journal never recorded 10 tasks: %v", u.jobs())
		}
		time.Sleep(20 * time.Millisecond) // polling a process we do not control
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	r.wait()
	res := u.run("", "attach", id)
	u.want(res, 1, nil, []string{"30 tasks, 10 succeeded, 0 failed, 20 unfinished (the job was lost)", "job lost"})
}
