package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/meadowrun-go/meadowrun/internal/journal"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
)

// bin is the meadowrun binary built for the tests, run as a user would.
var bin string

// buildFlags are given to go build (race_test.go adds -race).
var buildFlags []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meadowrun-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "meadowrun")
	build := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-o", bin, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building meadowrun:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// user is a shell session: its own state directory and working directory.
type user struct {
	t     *testing.T
	state string
	dir   string
	tmp   string // the user's TMPDIR
	env   []string
}

func newUser(t *testing.T) *user {
	u := &user{t: t, state: t.TempDir(), dir: t.TempDir(), tmp: t.TempDir()}
	u.env = append(os.Environ(), "XDG_STATE_HOME="+u.state, "TMPDIR="+u.tmp)
	// Before the directories go, the user's supervisors must be gone.
	t.Cleanup(func() {
		recs, _ := journal.New(filepath.Join(u.state, "meadowrun"), journal.Options{}).List(context.Background())
		for _, r := range recs {
			if r.Detached {
				waitExit(t, r.PID)
			}
		}
	})
	return u
}

// noFilesLeft fails the test when meadowrun left files in the user's
// temporary directory.
func (u *user) noFilesLeft() {
	u.t.Helper()
	var left []string
	filepath.WalkDir(u.tmp, func(p string, d os.DirEntry, err error) error {
		if p != u.tmp {
			left = append(left, strings.TrimPrefix(p, u.tmp+"/"))
		}
		return nil
	})
	if len(left) > 0 {
		u.t.Fatalf("meadowrun left files in TMPDIR: %q", left)
	}
}

// waitExit waits until process pid (not a child) has exited.
func waitExit(t *testing.T, pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 30_000); err != nil || n == 0 {
		t.Errorf("supervisor %d did not exit: %v", pid, err)
	}
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs meadowrun with args and stdin, and waits for it.
func (u *user) run(stdin string, args ...string) result {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env, cmd.Dir = u.env, u.dir
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		u.t.Fatalf("meadowrun %v: %v", args, err)
	}
	if ctx.Err() != nil {
		u.t.Fatalf("meadowrun %v timed out:\n%s", args, r)
	}
	return r
}

// want checks a result: its exit code, and strings its stdout and stderr
// must contain.
func (u *user) want(r result, code int, stdout, stderr []string) {
	u.t.Helper()
	ok := r.code == code
	for _, s := range stdout {
		ok = ok && strings.Contains(r.stdout, s)
	}
	for _, s := range stderr {
		ok = ok && strings.Contains(r.stderr, s)
	}
	if !ok {
		u.t.Fatalf("want exit %d, stdout with %q, stderr with %q; got %s", code, stdout, stderr, r)
	}
}

func (u *user) jobs() []map[string]any {
	u.t.Helper()
	r := u.run("", "jobs", "--json")
	var js []map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &js) != nil {
		u.t.Fatalf("jobs --json: %s", r)
	}
	return js
}

func TestRun(t *testing.T) {
	tests := []struct {
		name           string
		args           []string
		code           int
		stdout, stderr []string
	}{
		{"a command's output is streamed and its exit code is meadowrun's",
			[]string{"run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"}, 3, []string{"out\nerr\n"}, nil},
		{"a command that succeeds exits 0",
			[]string{"run", "--", "echo", "hello", "world"}, 0, []string{"hello world\n"}, nil},
		{"a command that is not found exits 127 and says so",
			[]string{"run", "--", "no-such-command-xyz"}, 127, nil, []string{"command not found: no-such-command-xyz"}},
		{"an unknown flag is a usage error",
			[]string{"run", "--no-such-flag", "--", "true"}, 2, nil, []string{"unknown flag: --no-such-flag", "meadowrun run --help"}},
		{"a command without -- is a usage error",
			[]string{"run", "echo", "hi"}, 2, nil, []string{"put the command after --"}},
		{"no command at all is a usage error",
			[]string{"run"}, 2, nil, []string{"no command given"}},
		{"an unknown command is a usage error",
			[]string{"runn"}, 2, nil, []string{`unknown command "runn"`}},
		{"environment variables reach the command",
			[]string{"run", "--env", "GREETING=salut", "-e", "WHO=toi", "--", "sh", "-c", "echo $GREETING $WHO"}, 0, []string{"salut toi\n"}, nil},
		{"context variables reach the command as JSON",
			[]string{"run", "--context-variables", `{"k": ["v", 1]}`, "--", "sh", "-c", "echo $MEADOWRUN_CONTEXT_VARIABLES"}, 0, []string{`{"k":["v",1]}` + "\n"}, nil},
		{"context variables that are not a JSON object are a usage error",
			[]string{"run", "--context-variables", "[1]", "--", "true"}, 2, nil, []string{`--context-variables "[1]": want a JSON object`}},
		{"a malformed --env is a usage error",
			[]string{"run", "--env", "NOEQUALS", "--", "true"}, 2, nil, []string{`--env "NOEQUALS": want KEY=VALUE`}},
		{"resources no worker can ever have are refused before anything runs",
			[]string{"run", "--cpu", "100000", "--", "true"}, 125, nil, []string{"can never fit", "logical CPUs"}},
		{"invalid resources are a usage error that names the flag",
			[]string{"run", "--memory", "-1", "--", "true"}, 2, nil, []string{"--memory is -1"}},
		{"an unknown host scheme is a clear error",
			[]string{"run", "--host", "nosuch://x", "--", "true"}, 125, nil, []string{`unknown host scheme "nosuch"`, "local"}},
		{"--json reports the completion on stdout",
			[]string{"run", "--json", "--", "sh", "-c", "echo hi; exit 5"}, 5, []string{`"exit_code":5`}, []string{"hi"}},
		{"a command killed by a signal exits 128+n",
			[]string{"run", "--", "sh", "-c", "kill -TERM $$"}, 143, nil, []string{"killed by"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newUser(t)
			u.want(u.run("", tc.args...), tc.code, tc.stdout, tc.stderr)
		})
	}
}

func TestRunPorts(t *testing.T) {
	// A port another program holds is refused before anything runs and
	// says which port and what to do; a free one is the command's.
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	u := newUser(t)
	u.want(u.run("", "run", "--port", taken, "--", "true"), 125, nil,
		[]string{"port " + taken, "taken by another program", "choose another port"})

	free, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(free.Addr().(*net.TCPAddr).Port)
	free.Close()
	// The command binds the port it asked for: python3 is on the test
	// machines (the Python tests need it).
	u.want(u.run("", "run", "--port", port, "--", "python3", "-c",
		"import socket; s=socket.socket(); s.bind(('', "+port+")); print('bound')"), 0, []string{"bound\n"}, nil)
}

func TestRunRetriesAFailingCommand(t *testing.T) {
	u := newUser(t)
	r := u.run("", "run", "--max-attempts", "2", "--", "sh", "-c", "test -e once || { touch once; echo first; exit 1; }; echo second")
	u.want(r, 0, []string{"first\n", "second\n"}, nil)
}

func TestMap(t *testing.T) {
	tests := []struct {
		name           string
		stdin          string
		args           []string
		code           int
		stdout, stderr []string
	}{
		{"placeholders are replaced by each input", "",
			[]string{"map", "-j", "2", "--", "echo", "{}", "{.}", "{/}", "{//}", "{/.}", "{#}", ":::", "a/b.txt", "c"}, 0,
			[]string{"[task 0] a/b.txt a/b b.txt a b 1\n", "[task 1] c c c . c 2\n"}, []string{"2 tasks, 2 succeeded, 0 failed"}},
		{"a command without placeholders gets the input last", "",
			[]string{"map", "--", "echo", "x", ":::", "1"}, 0, []string{"[task 0] x 1\n"}, nil},
		{"inputs come one per line from stdin without :::", "one\ntwo words\n",
			[]string{"map", "--", "echo", "<{}>"}, 0, []string{"[task 0] <one>\n", "[task 1] <two words>\n"}, nil},
		{"failed tasks make the exit code 1 and are listed", "",
			[]string{"map", "--", "sh", "-c", "exit {}", ":::", "0", "3", "0"}, 1, nil,
			[]string{"1 failed", `task 1 (input "3"), attempt 1: sh: exit code 3`, "meadowrun logs"}},
		{"a command that is not found exits 127 before anything runs", "",
			[]string{"map", "--", "no-such-command-xyz", ":::", "a"}, 127, nil, []string{"command not found: no-such-command-xyz"}},
		{"a map without -- is a usage error", "",
			[]string{"map", "echo", ":::", "a"}, 2, nil, []string{"put the command after --"}},
		{"::: without inputs is a usage error", "",
			[]string{"map", "--", "echo", ":::"}, 2, nil, []string{"no inputs after :::"}},
		{"a negative -j is a usage error", "",
			[]string{"map", "-j", "-1", "--", "echo", ":::", "a"}, 2, nil, []string{"-j is -1"}},
		{"an unknown flag is a usage error", "",
			[]string{"map", "--bogus", "--", "echo", ":::", "a"}, 2, nil, []string{"unknown flag: --bogus"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newUser(t)
			u.want(u.run(tc.stdin, tc.args...), tc.code, tc.stdout, tc.stderr)
		})
	}
}

func TestMapJSONHasOneLinePerTask(t *testing.T) {
	u := newUser(t)
	r := u.run("", "map", "--json", "--", "sh", "-c", "echo out {}; exit {}", ":::", "0", "2")
	u.want(r, 1, nil, []string{"[task 0] out 0"})
	got := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var line struct {
			Input    string  `json:"input"`
			ExitCode float64 `json:"exit_code"`
			OK       bool    `json:"ok"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("not JSON: %q in %s", sc.Text(), r)
		}
		got[line.Input] = line.ExitCode
	}
	if len(got) != 2 || got["0"] != 0 || got["2"] != 2 {
		t.Fatalf("results %v from %s", got, r)
	}
}

func TestMapRetriesFailingTasks(t *testing.T) {
	u := newUser(t)
	r := u.run("", "map", "--max-attempts", "3", "--", "sh", "-c", "test -e {} || { touch {}; exit 1; }", ":::", "a", "b")
	u.want(r, 0, nil, []string{"2 succeeded, 0 failed"})
}

func TestJobsAreListedWithTheirState(t *testing.T) {
	u := newUser(t)
	u.run("", "run", "--", "true")
	u.run("", "run", "--", "sh", "-c", "exit 4")
	u.run("", "map", "--", "sh", "-c", "exit {}", ":::", "0", "1", "0")
	r := u.run("", "jobs")
	u.want(r, 0, []string{"ID", "STATE", "succeeded", "failed (4)", "2/1/3", "local"}, nil)
	js := u.jobs()
	if len(js) != 3 || js[0]["state"] != "succeeded" || js[1]["exit_code"] != 4.0 || js[2]["kind"] != "map" || js[2]["done"] != 2.0 {
		t.Fatalf("jobs --json = %v", js)
	}
}

func TestADetachedCommandIsAttachedToFollowedAndKept(t *testing.T) {
	u := newUser(t)
	r := u.run("", "run", "--detach", "--", "sh", "-c", "echo first; sleep 0.3; echo second; exit 6")
	u.want(r, 0, nil, []string{"submitted", "meadowrun attach"})
	id := strings.TrimSpace(r.stdout)

	// Follow the log while it runs: it ends when the job does.
	u.want(u.run("", "logs", "-f", id), 0, []string{"first\nsecond\n"}, nil)
	// Attach waits, prints the output and exits with the command's code...
	u.want(u.run("", "attach", id), 6, []string{"first\nsecond\n"}, nil)
	// ... and so again once the job has finished: its results are kept.
	u.want(u.run("", "attach", id), 6, []string{"first\nsecond\n"}, nil)
	u.want(u.run("", "attach", "--json", id), 6, []string{`"exit_code":6`}, nil)
	// Cancelling a finished job is an error that loses nothing.
	u.want(u.run("", "cancel", id), 1, nil, []string{"already finished", "failed at", "results are kept"})
	u.want(u.run("", "attach", id), 6, []string{"first\nsecond\n"}, nil)
}

func TestADetachedMapIsCancelled(t *testing.T) {
	u := newUser(t)
	r := u.run("", "map", "--detach", "-j", "2", "--", "sh", "-c", "echo started {}; sleep 30", ":::", "1", "2", "3")
	u.want(r, 0, nil, nil)
	id := strings.TrimSpace(r.stdout)
	// Wait until a task has started.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if l := u.run("", "logs", id); strings.Contains(l.stdout, "started") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no task started")
		}
		time.Sleep(50 * time.Millisecond) // polling a process we do not control
	}
	u.want(u.run("", "cancel", id), 0, []string{"cancelled " + id}, nil)
	u.want(u.run("", "jobs", id), 0, []string{"cancelled"}, nil)
	u.want(u.run("", "attach", id), 130, []string{"started"}, []string{"cancelled"})
	u.want(u.run("", "cancel", id), 1, nil, []string{"already finished"})
}

func TestAnUnknownJobIsAClearError(t *testing.T) {
	u := newUser(t)
	u.run("", "run", "--", "true") // a journal exists
	for _, args := range [][]string{{"attach", "nope"}, {"logs", "nope"}, {"cancel", "nope"}, {"jobs", "nope"}} {
		u.want(u.run("", args...), 1, nil, []string{`no such job: "nope"`, "meadowrun jobs"})
	}
	u.want(u.run("", "attach"), 2, nil, []string{"takes a job id"})
}

func TestAttachAfterTheSubmittingProcessWasKilledGetsEveryResult(t *testing.T) {
	u := newUser(t)
	r := u.run("", "map", "--detach", "-j", "2", "--", "sh", "-c", "sleep 0.05; echo r{}", ":::", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10",
		"11", "12", "13", "14", "15", "16", "17", "18", "19", "20")
	id := strings.TrimSpace(r.stdout)
	// An attached shell, killed in the middle of the map.
	cmd := exec.Command(bin, "attach", id)
	cmd.Env = u.env
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for i := 0; i < 3 && sc.Scan(); i++ {
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	r = u.run("", "attach", "--json", id)
	u.want(r, 0, nil, []string{"20 succeeded"})
	if n := strings.Count(r.stdout, `"ok":true`); n != 20 {
		t.Fatalf("%d results, want 20: %s", n, r)
	}
}

func TestAnUnwritableStateDirectoryIsAClearErrorAndRunsNothing(t *testing.T) {
	u := newUser(t)
	file := filepath.Join(u.state, "a-file")
	os.WriteFile(file, nil, 0o644)
	u.env = append(u.env, "XDG_STATE_HOME="+filepath.Join(file, "state"))
	r := u.run("", "run", "--", "touch", "ran")
	u.want(r, 125, nil, []string{"state directory", "not a directory", "XDG_STATE_HOME"})
	if _, err := os.Stat(filepath.Join(u.dir, "ran")); err == nil {
		t.Fatal("the command ran although its job could not be journaled")
	}
	r = u.run("", "map", "--", "touch", ":::", "ran")
	u.want(r, 125, nil, []string{"state directory"})
}

func TestAFullDiskIsAClearErrorAndLeavesTheJournalIntact(t *testing.T) {
	u := newUser(t)
	mnt := filepath.Join(u.state, "small")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("a 1 MiB tmpfs is needed to fill a disk, and mounting one is not permitted here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	u.env = append(u.env, "XDG_STATE_HOME="+mnt)
	u.want(u.run("", "run", "--", "echo", "before"), 0, []string{"before"}, nil)

	// Task 3 fills the disk; the journal cannot record what follows.
	fill := filepath.Join(mnt, "fill")
	r := u.run("", "map", "-j", "1", "--", "sh", "-c", "[ {} = 3 ] && cat /dev/zero > "+fill+"; echo task {}",
		":::", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
	u.want(r, 125, nil, []string{"no space left on device", "journal"})
	for i := range 10 {
		// Nothing is lost for the user: every task ran and printed.
		if !strings.Contains(r.stdout, "task "+strconv.Itoa(i)+"\n") {
			t.Fatalf("output of task %d missing: %s", i, r)
		}
	}
	os.Remove(fill)
	if err := journal.New(filepath.Join(mnt, "meadowrun"), journal.Options{}).Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	js := u.jobs()
	if len(js) != 2 || js[0]["state"] != "succeeded" {
		t.Fatalf("jobs after the disk was full: %v", js)
	}
	// The journal works again once there is room.
	u.want(u.run("", "run", "--", "echo", "after"), 0, []string{"after"}, nil)
}

func TestVersionAndCompletion(t *testing.T) {
	u := newUser(t)
	u.want(u.run("", "version"), 0, []string{"meadowrun", "wire protocol"}, nil)
	r := u.run("", "version", "--json")
	var v map[string]any
	if json.Unmarshal([]byte(r.stdout), &v) != nil || v["go"] == nil {
		t.Fatalf("version --json: %s", r)
	}
	u.want(u.run("", "completion", "bash"), 0, []string{"__start_meadowrun"}, nil)
	id := strings.TrimSpace(u.run("", "run", "--detach", "--", "true").stdout)
	u.want(u.run("", "__complete", "attach", ""), 0, []string{id}, nil)
}

func TestAForegroundJobWhoseShellWasKilledIsShownAsLost(t *testing.T) {
	u := newUser(t)
	cmd := exec.Command(bin, "run", "--", "sh", "-c", "echo up; sleep 30")
	cmd.Env = u.env
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !bufio.NewScanner(out).Scan() {
		t.Fatal("the command did not start")
	}
	// The line reaches the log file just after the terminal.
	id := u.jobs()[0]["id"].(string)
	for !strings.Contains(u.run("", "logs", id).stdout, "up") {
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	js := u.jobs()
	if len(js) != 1 || js[0]["state"] != "lost" {
		t.Fatalf("jobs = %v", js)
	}
	u.want(u.run("", "attach", id), 125, []string{"up"}, []string{"job lost"})
	u.want(u.run("", "cancel", id), 0, []string{"cancelled"}, nil)
	u.want(u.run("", "jobs", id), 0, []string{"cancelled"}, nil)
}

func TestHostsDescribesTheMachines(t *testing.T) {
	u := newUser(t)
	r := u.run("", "hosts")
	u.want(r, 0, []string{"MACHINE", "localhost", runtime.GOOS + "/" + runtime.GOARCH}, nil)
	r = u.run("", "hosts", "--json")
	var ms []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil || len(ms) != 1 {
		t.Fatalf("hosts --json: %v\n%s", err, r)
	}
	if cpu, _ := ms[0]["logical_cpu"].(float64); cpu <= 0 || ms[0]["memory_enforcement"] == "" {
		t.Fatalf("hosts --json: %v", ms[0])
	}
	// Sizes are in the GB of --memory, whole, never 1e+05GiB or MiB.
	u.want(u.run("", "hosts", "--host", "local://?memory=100000"), 0, []string{" 100000GB "}, nil)
	u.want(u.run("", "hosts", "--host", "local://?memory=0.5"), 0, []string{" 0.5GB "}, nil)
	if r := u.run("", "hosts"); strings.Contains(r.stdout, "GiB") || strings.Contains(r.stdout, "e+") {
		t.Fatalf("hosts shows sizes in another unit than the flags': %s", r)
	}
	// A machine that cannot be reached is named with why, and the exit
	// code says so.
	_, priv, _ := ed25519.GenerateKey(nil)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(u.dir, "key")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	r = u.run("", "hosts", "--host", "ssh://nobody@127.0.0.1:1?timeout=2s&config=none&key="+key)
	u.want(r, 1, []string{"nobody@127.0.0.1:1", "cannot be used"}, []string{"machine unreachable: nobody@127.0.0.1:1", "1 of 1 machines cannot be used"})
}

// A detached map on two SSH machines is split between them: attach, logs
// and jobs show the map's own task numbers and each machine's part.
func TestADetachedMapOnSSHMachinesIsSplit(t *testing.T) {
	n := sshtest.Open(t)
	u := newUser(t)
	host := fmt.Sprintf("ssh://%s@%s,%s@%s?config=none&key=%s&known_hosts=%s", n.User, n.Addr("h1"), n.User, n.Addr("h2"), n.Key, n.KnownHosts)
	r := u.run("", "map", "--detach", "--host", host, "--", "sh", "-c", `echo {} on $(echo $SSH_CONNECTION | cut -d" " -f3)`, ":::", "a", "b", "c", "d")
	u.want(r, 0, nil, []string{"submitted"})
	id := strings.TrimSpace(r.stdout)
	r = u.run("", "attach", id)
	lines := []string{}
	for i, in := range []string{"a", "b", "c", "d"} {
		lines = append(lines, fmt.Sprintf("[task %d] %s on 10.", i, in))
	}
	u.want(r, 0, lines, []string{"4 succeeded"})
	if !strings.Contains(r.stdout, " on "+n.Hosts["h1"]+"\n") || !strings.Contains(r.stdout, " on "+n.Hosts["h2"]+"\n") {
		t.Fatalf("the tasks did not run on both machines:\n%s", r)
	}
	u.want(u.run("", "logs", id, "--task", "3"), 0, []string{"d on 10."}, nil)
	r = u.run("", "jobs", id)
	u.want(r, 0, []string{id + ".1", "part", n.Addr("h1"), n.Addr("h2"), "4/0/4", "2/0/2"}, nil)
}

// jobs import wants job ids and a host that finds its jobs by id; the
// local host does not, and says so.
func TestJobsImportBadInput(t *testing.T) {
	u := newUser(t)
	u.env = append(u.env, "MEADOWRUN_HOST=")
	u.want(u.run("", "jobs", "import", "--host", "local"), 2, nil, []string{"takes one job id or more"})
	u.want(u.run("", "jobs", "import", "20261204T010203-1-1"), 2, nil, []string{"--host is needed"})
	u.want(u.run("", "jobs", "import", "--host", "local", "20261204T010203-1-1"), 1, nil,
		[]string{"importing job 20261204T010203-1-1", "does not find its jobs by id"})
	u.want(u.run("", "jobs", "import", "--host", "nope://x", "20261204T010203-1-1"), 1, nil, []string{"nope"})
}
