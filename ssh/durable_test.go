package ssh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
	"github.com/meadowrun-go/meadowrun/internal/testkit"
	mrssh "github.com/meadowrun-go/meadowrun/ssh"
)

// sshEcho prints which task it is and where (the machine's address, as
// SSH_CONNECTION gives it to the agent), then squares x after ms
// milliseconds (until cancelled when ms is negative).
var sshEcho = meadowrun.Register("sshdurable.Echo", func(ctx context.Context, a squareArg) (int, error) {
	where, _ := os.Hostname()
	if f := strings.Fields(os.Getenv("SSH_CONNECTION")); len(f) > 2 {
		where = f[2]
	}
	fmt.Printf("echo %d on %s\n", a.X, where)
	if err := testkit.WaitMs(ctx, a.Ms); err != nil {
		return 0, err
	}
	return a.X * a.X, nil
})

// submitSSH submits a map of sshEcho over n arguments to h1 and
// disconnects, as a submitting process that exits would.
func submitSSH(t *testing.T, n *sshtest.Net, tasks, ms int) string {
	return submitSSHHandle(t, n, tasks, ms).ID()
}

func submitSSHHandle(t *testing.T, n *sshtest.Net, tasks, ms int) *meadowrun.DetachedMap[int] {
	t.Helper()
	return submitEcho(t, newSSH(t, n, mrssh.Options{}, "h1"), tasks, ms, &meadowrun.MapOptions{Concurrency: 2})
}

// submitEcho submits a map of sshEcho over tasks arguments that each take
// ms milliseconds to h, and closes h.
func submitEcho(t *testing.T, h *meadowrun.Host, tasks, ms int, o *meadowrun.MapOptions) *meadowrun.DetachedMap[int] {
	t.Helper()
	args := make([]squareArg, tasks)
	for i := range args {
		args[i] = squareArg{X: i, Ms: ms}
	}
	start := time.Now()
	m, err := meadowrun.SubmitMap(context.Background(), sshEcho, args, h, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("submitted %s in %v", m.ID(), time.Since(start))
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	return m
}

// collectOnce attaches to a map and checks that it yields every task's
// square exactly once.
func collectOnce(t *testing.T, id string, tasks int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := meadowrun.AttachMap[int](ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for r := range m.AsCompleted(ctx) {
		if r.Err != nil {
			t.Fatalf("task %d: %v", r.TaskID, r.Err)
		}
		if seen[r.TaskID] {
			t.Fatalf("task %d yielded twice", r.TaskID)
		}
		seen[r.TaskID] = true
		if r.Value != r.TaskID*r.TaskID {
			t.Fatalf("task %d = %d", r.TaskID, r.Value)
		}
	}
	if len(seen) != tasks {
		t.Fatalf("%d results, want %d", len(seen), tasks)
	}
}

// openDetached opens the test network for a test of detached jobs, with a
// journal of its own, and a context that bounds the test.
func openDetached(t *testing.T) (*sshtest.Net, context.Context) {
	t.Helper()
	n := sshtest.Open(t)
	testkit.StateDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return n, ctx
}

// attachWait attaches to the detached function id and returns its result.
func attachWait[R any](t *testing.T, ctx context.Context, id string) R {
	t.Helper()
	j, err := meadowrun.Attach[R](ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	v, err := j.Wait(ctx)
	if err != nil {
		t.Fatalf("job %s: %v", id, err)
	}
	return v
}

func TestSSHDetachedMapOutlivesItsSubmitter(t *testing.T) {
	n := sshtest.Open(t)
	testkit.StateDir(t)
	ctx := context.Background()
	id := submitSSH(t, n, 20, 100)

	// Another process: it knows the job by id only.
	info, err := meadowrun.GetJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info.Machine, n.Addr("h1")) || !strings.HasPrefix(info.Host, "ssh://") || info.State == meadowrun.JobLost {
		t.Fatalf("GetJob = %+v", info)
	}
	start := time.Now()
	collectOnce(t, id, 20)
	t.Logf("attached and collected in %v", time.Since(start))
	if info, err = meadowrun.GetJob(ctx, id); err != nil || info.State != meadowrun.JobSucceeded || info.Done != 20 {
		t.Fatalf("GetJob = %+v, %v", info, err)
	}
	// A finished job's results can be read again.
	collectOnce(t, id, 20)
	var log bytes.Buffer
	if err := meadowrun.JobLog(ctx, id, &log, &meadowrun.LogOptions{Tasks: []int{7}, Bare: true}); err != nil {
		t.Fatal(err)
	}
	if want := "echo 7 on "; !strings.HasPrefix(log.String(), want) || strings.Count(log.String(), "\n") != 1 {
		t.Fatalf("log of task 7 = %q", log.String())
	}
	log.Reset()
	if err := meadowrun.JobLog(ctx, id, &log, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if !strings.Contains(log.String(), fmt.Sprintf("[task %d] echo %d on ", i, i)) {
			t.Fatalf("the log lacks task %d:\n%s", i, log.String())
		}
	}
	// The local journal lists it, with its last known state.
	jobs, err := meadowrun.ListJobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].ID != id || jobs[0].State != meadowrun.JobSucceeded {
		t.Fatalf("ListJobs = %+v, %v", jobs, err)
	}
}

func TestSSHDetachedMapRunsWhileNobodyIsConnected(t *testing.T) {
	n := sshtest.Open(t)
	testkit.StateDir(t)
	ctx := context.Background()
	const tasks = 30
	m := submitSSHHandle(t, n, tasks, 100) // about 1.5 s with 2 at a time
	id := m.ID()
	// Nobody is connected but for a moment every half second, to look:
	// tasks get done meanwhile.
	start := time.Now()
	for {
		time.Sleep(500 * time.Millisecond)
		info, err := meadowrun.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == meadowrun.JobLost || info.State == meadowrun.JobFailed {
			t.Fatalf("GetJob = %+v", info)
		}
		if info.Done > 0 {
			t.Logf("after %v disconnected: %s, %d of %d done", time.Since(start).Round(time.Millisecond), info.State, info.Done, info.Tasks)
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("nothing ran in 30 s while nobody was connected: %+v", info)
		}
	}
	collectOnce(t, id, tasks)
	// The submitter's handle outlives the host it closed.
	got, err := m.Wait(ctx)
	if err != nil || len(got) != tasks || got[tasks-1] != (tasks-1)*(tasks-1) {
		t.Fatalf("Wait = %v, %v", got, err)
	}
}

func TestSSHDetachedFunctionAndCommand(t *testing.T) {
	n, ctx := openDetached(t)
	h := newSSH(t, n, mrssh.Options{}, "h1")
	f, err := meadowrun.SubmitFunction(ctx, sshEcho.With(squareArg{X: 9}), h, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := meadowrun.SubmitCommand(ctx, []string{"sh", "-c", "echo hello from $(hostname); exit 3"}, h, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if v := attachWait[int](t, ctx, f.ID()); v != 81 {
		t.Fatalf("Wait = %v", v)
	}
	if log := testkit.AttachExit3(t, ctx, c.ID()); !strings.HasPrefix(log, "hello from ") {
		t.Fatalf("log = %q", log)
	}
	if _, err := meadowrun.Attach[string](ctx, f.ID()); !errors.Is(err, meadowrun.ErrRegistryMismatch) {
		t.Fatalf("Attach[string] = %v, want ErrRegistryMismatch", err)
	}
}

func TestSSHCancelDetachedJob(t *testing.T) {
	n, ctx := openDetached(t)
	id := submitSSH(t, n, 4, -1) // never ends by itself
	for {
		info, err := meadowrun.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == meadowrun.JobRunning {
			break
		}
		if info.State.Final() {
			t.Fatalf("GetJob = %+v", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	if err := meadowrun.CancelJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	t.Logf("cancelled in %v", time.Since(start))
	info, err := meadowrun.GetJob(ctx, id)
	if err != nil || info.State != meadowrun.JobCancelled {
		t.Fatalf("GetJob = %+v, %v", info, err)
	}
	m, err := meadowrun.AttachMap[int](ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(ctx); err == nil {
		t.Fatal("Wait of a cancelled map succeeded")
	}
	if err := meadowrun.CancelJob(ctx, id); !errors.Is(err, meadowrun.ErrJobFinished) {
		t.Fatalf("second CancelJob = %v, want ErrJobFinished", err)
	}
}

func TestSSHAttachUnknownJob(t *testing.T) {
	n := sshtest.Open(t)
	testkit.StateDir(t)
	ctx := context.Background()
	if _, err := meadowrun.AttachMap[int](ctx, "no-such-job"); !errors.Is(err, meadowrun.ErrJobNotFound) {
		t.Fatalf("AttachMap(no-such-job) = %v", err)
	}
	id := submitSSH(t, n, 2, 0)
	collectOnce(t, id, 2)
	// The machine forgets it: its agent's state directory is removed.
	n.Run(t, "h1", `rm -rf "${XDG_CACHE_HOME:-$HOME/.cache}"/meadowrun/state-*`)
	_, err := meadowrun.AttachMap[int](ctx, id)
	if !errors.Is(err, meadowrun.ErrJobNotFound) || !strings.Contains(err.Error(), n.Addr("h1")) {
		t.Fatalf("AttachMap of a job its machine forgot = %v", err)
	}
	t.Logf("error: %v", err)
}

func TestSSHDetachedJobTakesItsDeploymentFiles(t *testing.T) {
	n, ctx := openDetached(t)
	h := newSSH(t, n, mrssh.Options{}, "h1")
	o := &meadowrun.Options{Deployment: meadowrun.MirrorLocal([]string{"testdata/deploy/*.txt"}, nil)}
	f, err := meadowrun.SubmitFunction(ctx, sshWhere.With(1), h, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if got := attachWait[string](t, ctx, f.ID()); !strings.HasSuffix(got, "|hello from the caller\n") {
		t.Fatalf("the detached job's worker did not find the deployment file: %q", got)
	}
	// A glob that matches nothing is refused here, before anything is sent.
	o.Deployment = meadowrun.MirrorLocal([]string{"testdata/deploy/*.none"}, nil)
	h = newSSH(t, n, mrssh.Options{}, "h1")
	if _, err := meadowrun.SubmitFunction(ctx, sshWhere.With(1), h, o, nil); !errors.Is(err, meadowrun.ErrInvalidOptions) {
		t.Fatalf("SubmitFunction with a glob matching nothing = %v, want ErrInvalidOptions", err)
	}
}

// A detached map on several machines is split across them: each runs its
// part while nobody is connected, and attaching collects every task once,
// with the map's indices, from all of them.
func TestSSHDetachedMapIsSplitAcrossMachines(t *testing.T) {
	n, ctx := openDetached(t)
	const tasks = 30
	m := submitEcho(t, newSSH(t, n, mrssh.Options{}, "h1", "h2", "h3"), tasks, 50, nil)
	id := m.ID()
	info, err := meadowrun.GetJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"h1", "h2", "h3"} {
		if !strings.Contains(info.Machine, n.Addr(name)) {
			t.Fatalf("GetJob = %+v: %s is not one of its machines", info, name)
		}
	}
	if info.Tasks != tasks {
		t.Fatalf("GetJob = %+v", info)
	}
	collectOnce(t, id, tasks)
	if info, err = meadowrun.GetJob(ctx, id); err != nil || info.State != meadowrun.JobSucceeded || info.Done != tasks {
		t.Fatalf("GetJob after the map = %+v, %v", info, err)
	}
	// Each machine's part: a third of the tasks, done.
	if len(info.Parts) != 3 {
		t.Fatalf("GetJob parts = %+v", info.Parts)
	}
	for i, p := range info.Parts {
		if p.Machine != n.User+"@"+n.Addr([]string{"h1", "h2", "h3"}[i]) || p.State != meadowrun.JobSucceeded || p.Tasks != tasks/3 || p.Done != tasks/3 {
			t.Fatalf("part %d = %+v", i, p)
		}
	}
	got, err := m.Wait(ctx)
	if err != nil || len(got) != tasks || got[tasks-1] != (tasks-1)*(tasks-1) {
		t.Fatalf("Wait = %v, %v", got, err)
	}

	// The log has every task under its own index, and says where each ran.
	var log bytes.Buffer
	if err := meadowrun.JobLog(ctx, id, &log, nil); err != nil {
		t.Fatal(err)
	}
	ranOn := map[string]int{}
	for i := range tasks {
		prefix := fmt.Sprintf("[task %d] echo %d on ", i, i)
		at := strings.Index(log.String(), prefix)
		if at < 0 {
			t.Fatalf("the log lacks task %d:\n%s", i, log.String())
		}
		host, _, _ := strings.Cut(log.String()[at+len(prefix):], "\n")
		ranOn[host]++
	}
	for _, name := range []string{"h1", "h2", "h3"} {
		if ranOn[n.Hosts[name]] == 0 {
			t.Fatalf("no task ran on %s: %v", name, ranOn)
		}
	}
	t.Logf("tasks per machine: %v", ranOn)
	log.Reset()
	if err := meadowrun.JobLog(ctx, id, &log, &meadowrun.LogOptions{Tasks: []int{tasks - 1}, Bare: true}); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("echo %d on ", tasks-1); !strings.HasPrefix(log.String(), want) || strings.Count(log.String(), "\n") != 1 {
		t.Fatalf("log of task %d = %q", tasks-1, log.String())
	}
}

// Cancelling a split map cancels every part; a machine that cannot be
// reached when the map is submitted is left out of the split.
func TestSSHCancelSplitMap(t *testing.T) {
	n, ctx := openDetached(t)
	h := newSSHMachines(t, n, mrssh.Options{ConnectTimeout: time.Second},
		"root@"+n.Addr("h1"), "root@"+n.Unreachable+":22", "root@"+n.Addr("h2"))
	m := submitEcho(t, h, 6, -1, nil) // tasks that never end by themselves
	id := m.ID()
	info, err := meadowrun.GetJob(ctx, id)
	if err != nil || strings.Contains(info.Machine, n.Unreachable) || !strings.Contains(info.Machine, n.Addr("h1")) ||
		!strings.Contains(info.Machine, n.Addr("h2")) {
		t.Fatalf("GetJob = %+v, %v: want h1 and h2 only", info, err)
	}
	// Wait until tasks have started on both machines.
	for {
		var log bytes.Buffer
		if err := meadowrun.JobLog(ctx, id, &log, nil); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(log.String(), " on "+n.Hosts["h1"]+"\n") && strings.Contains(log.String(), " on "+n.Hosts["h2"]+"\n") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("tasks did not start on both machines:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := meadowrun.CancelJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Tasks that never end leave a part running unless it was cancelled.
	info, err = meadowrun.GetJob(ctx, id)
	if err != nil || info.State != meadowrun.JobCancelled {
		t.Fatalf("GetJob = %+v, %v", info, err)
	}
	if err := meadowrun.CancelJob(ctx, id); !errors.Is(err, meadowrun.ErrJobFinished) {
		t.Fatalf("second CancelJob = %v, want ErrJobFinished", err)
	}
}

// A machine of a split map that is cut off holds back only its own part:
// the other parts' results arrive meanwhile, its part goes on there, and
// its results arrive once it is back, each task once.
func TestSSHSplitMapRidesOutACutMachine(t *testing.T) {
	n, ctx := openDetached(t)
	const tasks = 30
	m := submitEcho(t, newSSH(t, n, mrssh.Options{}, "h1", "h2", "h3"), tasks, 300, nil)
	n.LinkDown(t, "h2")
	t.Cleanup(func() { n.LinkUp(t, "h2") })
	a, err := meadowrun.AttachMap[int](ctx, m.ID())
	if err != nil {
		t.Fatal(err)
	}
	// The log is followed meanwhile, as `meadowrun logs -f` does.
	var log hosttest.SyncBuffer
	logged := make(chan error, 1)
	go func() { logged <- meadowrun.JobLog(ctx, m.ID(), &log, &meadowrun.LogOptions{Follow: true}) }()
	seen := map[int]bool{}
	cut := true
	for r := range a.AsCompleted(ctx) {
		if r.Err != nil {
			t.Fatalf("task %d: %v", r.TaskID, r.Err)
		}
		if seen[r.TaskID] || r.Value != r.TaskID*r.TaskID {
			t.Fatalf("task %d = %d (seen before: %v)", r.TaskID, r.Value, seen[r.TaskID])
		}
		seen[r.TaskID] = true
		// h1's and h3's parts (two thirds of the tasks) come while h2
		// is cut off.
		if cut && len(seen) == 2*tasks/3 {
			cut = false
			n.LinkUp(t, "h2")
		}
	}
	if len(seen) != tasks {
		t.Fatalf("%d results, want %d", len(seen), tasks)
	}
	if info, err := meadowrun.GetJob(ctx, m.ID()); err != nil || info.State != meadowrun.JobSucceeded || info.Done != tasks {
		t.Fatalf("GetJob = %+v, %v", info, err)
	}
	if err := <-logged; err != nil {
		t.Fatalf("following the log: %v", err)
	}
	for i := range tasks {
		if strings.Count(log.String(), fmt.Sprintf("[task %d] echo %d on ", i, i)) != 1 {
			t.Fatalf("the followed log has task %d other than once:\n%s", i, log.String())
		}
	}
}
