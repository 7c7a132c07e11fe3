package meadowrun_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/inprocess"
	"github.com/meadowrun-go/meadowrun/internal/testkit"
)

// submitterEnv makes the test binary a program that submits a detached
// map and follows it, for the test that SIGKILLs it.
const submitterEnv = "MEADOWRUN_TEST_SUBMITTER"

var (
	// durableSquare squares x after waiting ms milliseconds, or until
	// cancelled when ms is negative.
	durableSquare = meadowrun.Register("durable.Square", func(ctx context.Context, a squareArg) (int, error) {
		if err := testkit.WaitMs(ctx, a.Ms); err != nil {
			return 0, err
		}
		if a.Fail {
			return 0, fmt.Errorf("square of %d refused", a.X)
		}
		return a.X * a.X, nil
	})
)

type squareArg struct {
	X, Ms int
	Fail  bool
}

func init() {
	// Only the submitter itself: its supervisor and workers inherit the
	// variable but are started with their own.
	if os.Getenv(submitterEnv) == "" || os.Getenv("MEADOWRUN_WORKER") != "" || os.Getenv("MEADOWRUN_SUPERVISE") != "" {
		return
	}
	meadowrun.Main()
	ctx := context.Background()
	args := make([]squareArg, 40)
	for i := range args {
		args[i] = squareArg{X: i, Ms: 50}
	}
	m, err := meadowrun.SubmitMap(ctx, durableSquare, args, meadowrun.Local(), &meadowrun.MapOptions{Concurrency: 2}, nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("id", m.ID())
	for r := range m.AsCompleted(ctx) {
		fmt.Println("result", r.TaskID, r.Value, r.Err)
	}
	os.Exit(0)
}

func inProcessHost(t *testing.T) *meadowrun.Host {
	h, err := meadowrun.OpenHost(context.Background(), "inprocess://?cpu=2")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestADetachedMapSurvivesTheSIGKILLOfItsSubmitter(t *testing.T) {
	testkit.StateDir(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), submitterEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	id, results := "", 0
	for results < 5 && sc.Scan() {
		f := strings.Fields(sc.Text())
		switch f[0] {
		case "id":
			id = f[1]
		case "result":
			results++
		default:
			t.Fatalf("submitter: %s", sc.Text())
		}
	}
	if id == "" || results < 5 {
		t.Fatalf("the submitter stopped early (id %q, %d results)", id, results)
	}
	// In the middle of the map.
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := meadowrun.AttachMap[int](ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != i*i {
			t.Fatalf("result %d = %d, want %d (all: %v)", i, v, i*i, got)
		}
	}
	if len(got) != 40 {
		t.Fatalf("%d results, want 40", len(got))
	}
	info, err := m.Info(ctx)
	if err != nil || info.State != meadowrun.JobSucceeded || info.Done != 40 || !info.Detached {
		t.Fatalf("Info = %+v, %v", info, err)
	}
}

func TestDurableJobs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"a detached function's result can be read any number of times", func(t *testing.T) {
			d, err := meadowrun.SubmitFunction(ctx, durableSquare.With(squareArg{X: 7}), inProcessHost(t), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				v, err := d.Wait(ctx)
				if v != 49 || err != nil {
					t.Fatalf("Wait = %d, %v", v, err)
				}
			}
			a, err := meadowrun.Attach[int](ctx, d.ID())
			if err != nil {
				t.Fatal(err)
			}
			if v, err := a.Wait(ctx); v != 49 || err != nil {
				t.Fatalf("attached Wait = %d, %v", v, err)
			}
			raw, err := meadowrun.Attach[json.RawMessage](ctx, d.ID())
			if err != nil {
				t.Fatal(err)
			}
			if v, err := raw.Wait(ctx); string(v) != "49" || err != nil {
				t.Fatalf("raw Wait = %s, %v", v, err)
			}
		}},
		{"attaching with the wrong result type is a clear error", func(t *testing.T) {
			d, err := meadowrun.SubmitFunction(ctx, durableSquare.With(squareArg{X: 1}), inProcessHost(t), nil, &meadowrun.SubmitOptions{InProcess: true})
			if err != nil {
				t.Fatal(err)
			}
			d.Wait(ctx)
			if _, err := meadowrun.Attach[string](ctx, d.ID()); !errors.Is(err, meadowrun.ErrRegistryMismatch) {
				t.Fatalf("Attach[string] = %v", err)
			}
			if _, err := meadowrun.AttachMap[int](ctx, d.ID()); err == nil || !strings.Contains(err.Error(), "not a map job") {
				t.Fatalf("AttachMap = %v", err)
			}
		}},
		{"a detached command keeps its exit code and output", func(t *testing.T) {
			d, err := meadowrun.SubmitCommand(ctx, []string{"sh", "-c", "echo hello; exit 3"}, nil,
				&meadowrun.CommandOptions{Options: meadowrun.Options{Output: &bytes.Buffer{}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if log := testkit.AttachExit3(t, ctx, d.ID()); log != "hello\n" {
				t.Fatalf("log = %q", log)
			}
			info, _ := meadowrun.GetJob(ctx, d.ID())
			if info.State != meadowrun.JobFailed || info.ExitCode != 3 {
				t.Fatalf("info = %+v", info)
			}
		}},
		{"a command job is retried up to its attempts", func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "once")
			d, err := meadowrun.SubmitCommand(ctx, []string{"sh", "-c", "test -e " + marker + " || { touch " + marker + "; exit 1; }"}, nil,
				&meadowrun.CommandOptions{Options: meadowrun.Options{Output: &bytes.Buffer{}}}, &meadowrun.SubmitOptions{MaxAttempts: 2, InProcess: true})
			if err != nil {
				t.Fatal(err)
			}
			jc, err := d.Wait(ctx)
			if err != nil || jc.ReturnCode != 0 {
				t.Fatalf("Wait = %+v, %v", jc, err)
			}
		}},
		{"a detached map is cancelled from its id and stays cancelled", func(t *testing.T) {
			args := []squareArg{{X: 1}, {X: 2, Ms: -1}, {X: 3, Ms: -1}, {X: 4, Ms: -1}}
			m, err := meadowrun.SubmitMap(ctx, durableSquare, args, inProcessHost(t), &meadowrun.MapOptions{Concurrency: 2}, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Wait until the first task is done, so the others run.
			for r := range m.AsCompleted(ctx) {
				if r.TaskID == 0 {
					break
				}
			}
			if err := meadowrun.CancelJob(ctx, m.ID()); err != nil {
				t.Fatal(err)
			}
			info, _ := m.Info(ctx)
			if info.State != meadowrun.JobCancelled {
				t.Fatalf("state after cancel = %s", info.State)
			}
			if err := meadowrun.CancelJob(ctx, m.ID()); !errors.Is(err, meadowrun.ErrJobFinished) {
				t.Fatalf("second cancel = %v", err)
			}
			got, err := m.Wait(ctx)
			if len(got) != 4 || got[0] != 1 || !errors.Is(err, context.Canceled) {
				t.Fatalf("Wait after cancel = %v, %v", got, err)
			}
		}},
		{"a map cancelled right after it was submitted says so and blames no task", func(t *testing.T) {
			// The cancel races the supervisor reading the arguments from
			// the journal: try it several times.
			for try := range 5 {
				args := make([]squareArg, 10)
				for i := range args {
					args[i] = squareArg{X: i, Ms: -1}
				}
				m, err := meadowrun.SubmitMap(ctx, durableSquare, args, inProcessHost(t), &meadowrun.MapOptions{Concurrency: 2}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Cancel(ctx); err != nil {
					t.Fatal(err)
				}
				for r := range m.AsCompleted(ctx) {
					var te *meadowrun.TaskError
					if errors.As(r.Err, &te) && te.Kind != meadowrun.KindCanceled {
						t.Fatalf("try %d: task %d failed as %s: %v", try, r.TaskID, te.Kind, r.Err)
					}
				}
				if _, err := m.Wait(ctx); !errors.Is(err, context.Canceled) {
					t.Fatalf("try %d: Wait error = %v, want context.Canceled", try, err)
				}
				if info, _ := m.Info(ctx); info.State != meadowrun.JobCancelled {
					t.Fatalf("try %d: state %s, want cancelled", try, info.State)
				}
			}
		}},
		{"an in-process map streams its results and journals them", func(t *testing.T) {
			args := []squareArg{{X: 1}, {X: 2, Fail: true}, {X: 3}}
			m, err := meadowrun.SubmitMap(ctx, durableSquare, args, inProcessHost(t), nil, &meadowrun.SubmitOptions{InProcess: true})
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.Wait(ctx)
			var me *meadowrun.MapError
			if !errors.As(err, &me) || len(me.Failed) != 1 || me.Failed[0].TaskID != 1 || got[0] != 1 || got[2] != 9 {
				t.Fatalf("Wait = %v, %v", got, err)
			}
			again, err := m.Wait(ctx) // from the journal this time
			if !errors.As(err, &me) || again[2] != 9 {
				t.Fatalf("second Wait = %v, %v", again, err)
			}
			info, _ := m.Info(ctx)
			if info.State != meadowrun.JobFailed || info.Done != 2 || info.Failed != 1 || info.Tasks != 3 || info.Detached {
				t.Fatalf("info = %+v", info)
			}
		}},
		{"an unknown job id is ErrJobNotFound everywhere", func(t *testing.T) {
			for name, err := range map[string]error{
				"GetJob":    func() error { _, err := meadowrun.GetJob(ctx, "nope"); return err }(),
				"CancelJob": meadowrun.CancelJob(ctx, "nope"),
				"AttachMap": func() error { _, err := meadowrun.AttachMap[int](ctx, "nope"); return err }(),
				"JobLog":    meadowrun.JobLog(ctx, "nope", &bytes.Buffer{}, nil),
			} {
				if !errors.Is(err, meadowrun.ErrJobNotFound) {
					t.Errorf("%s = %v", name, err)
				}
			}
		}},
		{"a detached job needs a host with a URL", func(t *testing.T) {
			h := inprocess.NewHost(1)
			t.Cleanup(func() { h.Close() })
			_, err := meadowrun.SubmitFunction(ctx, durableSquare.With(squareArg{}), h, nil, nil)
			if !errors.Is(err, meadowrun.ErrUnsupported) {
				t.Fatalf("SubmitFunction = %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			testkit.StateDir(t)
			tc.run(t)
		})
	}
}

func TestHostURLs(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		url, err string
	}{
		{"local", ""},
		{"local://", ""},
		{"local://?cpu=1", ""},
		{"local://?cpus=1", `unknown parameter "cpus"`},
		{"local://?cpu=-1", "want a positive number"},
		{"nosuch://x", `unknown host scheme "nosuch"`},
		{"inprocess://?cpu=1", ""},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.url), func(t *testing.T) {
			h, err := meadowrun.OpenHost(ctx, tc.url)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("OpenHost = %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.url
			if want == "local://" {
				want = "local" // this machine's one canonical URL
			}
			if u, ok := meadowrun.HostURL(h); !ok || u != want {
				t.Fatalf("HostURL = %q, %v", u, ok)
			}
		})
	}
}
