package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/pyworker/pytest"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
	mrssh "github.com/meadowrun-go/meadowrun/ssh"
)

// Python functions on SSH machines: the test package testdata/py/mrtest
// travels with the deployment (WithGlobs) into the worker's working
// directory on the machine, and the Python worker imports it from there.

var (
	pySquare = meadowrun.Named[int, int]("mrtest.fns.square")
	pyWhere  = meadowrun.Named[int, pyPlace]("mrtest.fns.where")
	pyFails  = meadowrun.Named[pyMessage, int]("mrtest.fns.fails")
	pyCustom = meadowrun.Named[pyMessage, int]("mrtest.fns.fails_custom")
	pyPrints = meadowrun.Named[int, int]("mrtest.fns.prints")
)

type pyMessage struct {
	Message string `json:"message"`
}

// pyPlace is where mrtest.fns.where ran.
type pyPlace struct {
	SSHConnection string `json:"ssh_connection"`
	Cwd           string `json:"cwd"`
	Module        string `json:"module"`
	Python        string `json:"python"`
}

// pyDeployment runs interpreter with the Python test package among the
// deployment's files. The package is under testdata/py, relative to the
// worker's working directory, so PYTHONPATH names that, relative too.
func pyDeployment(interpreter string) meadowrun.Deployment {
	return meadowrun.PreinstalledInterpreter(interpreter, map[string]string{"PYTHONPATH": "testdata/py", "PYTHONDONTWRITEBYTECODE": "1"}).
		WithGlobs("testdata/py/mrtest/*.py")
}

// pyOptions are options for Python functions on h, whose machines must
// have python3: the test skips without (fails with MEADOWRUN_REQUIRE_PYTHON=1).
func pyOptions(t *testing.T, h *meadowrun.Host) *meadowrun.Options {
	t.Helper()
	ms, err := meadowrun.DescribeHost(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Err != nil {
			t.Fatalf("machine %s: %v", m.Name, m.Err)
		}
		if m.Python == "" {
			if os.Getenv(pytest.EnvRequire) == "1" {
				t.Fatalf("machine %s has no python3 (%s=1)", m.Name, pytest.EnvRequire)
			}
			t.Skipf("machine %s has no python3", m.Name)
		}
		if !strings.HasPrefix(m.Python, "3.") {
			t.Fatalf("machine %s says its python3 is %q", m.Name, m.Python)
		}
	}
	return &meadowrun.Options{LogDir: t.TempDir(), Output: &hosttest.SyncBuffer{}, Deployment: pyDeployment("")}
}

func TestSSHRunsPythonFunctions(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSH(t, n, mrssh.Options{}, "h1", "h2")
	o := pyOptions(t, h)
	ctx := context.Background()
	if got, err := meadowrun.RunFunction(ctx, pySquare.With(7), h, o); err != nil || got != 49 {
		t.Fatalf("square(7) = %d, %v; want 49", got, err)
	}
	t.Run("the module is imported from the files copied to the machine", func(t *testing.T) {
		p, err := meadowrun.RunFunction(ctx, pyWhere.With(0), h, o)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(p.SSHConnection)
		if len(f) < 3 || (f[2] != n.Hosts["h1"] && f[2] != n.Hosts["h2"]) {
			t.Fatalf("ran with SSH_CONNECTION %q, want on h1 or h2", p.SSHConnection)
		}
		if !strings.Contains(p.Cwd, "/.cache/meadowrun/deploy/") || p.Module != p.Cwd+"/testdata/py/mrtest/fns.py" {
			t.Fatalf("worker in %s imported %s; want the module copied into the agent's working tree", p.Cwd, p.Module)
		}
		t.Logf("python %s in %s", p.Python, p.Cwd)
	})
	t.Run("a map returns every result in order", func(t *testing.T) {
		args := make([]int, 60)
		for i := range args {
			args[i] = i
		}
		got, err := meadowrun.RunMap(ctx, pySquare, args, h, &meadowrun.MapOptions{Options: *o, Concurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range got {
			if v != i*i {
				t.Fatalf("result %d = %d, want %d", i, v, i*i)
			}
		}
	})
	t.Run("a Go function on the same host gets a Go worker", func(t *testing.T) {
		got, err := meadowrun.RunFunction(ctx, sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
		if err != nil || (!strings.Contains(got, n.Hosts["h1"]) && !strings.Contains(got, n.Hosts["h2"])) {
			t.Fatalf("Go function after Python ones: %q, %v", got, err)
		}
	})
}

func TestSSHPythonExceptionIsATaskError(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSH(t, n, mrssh.Options{}, "h3")
	o := pyOptions(t, h)
	tests := []struct {
		name     string
		fn       meadowrun.Func[pyMessage, int]
		wantType string
	}{
		{"a built-in exception is named by its type", pyFails, "ValueError"},
		{"a module's exception is named with its module", pyCustom, "mrtest.fns.NotFound"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := meadowrun.RunFunction(context.Background(), tc.fn.With(pyMessage{"disk on fire"}), h, o)
			var te *meadowrun.TaskError
			if !errors.As(err, &te) {
				t.Fatalf("error = %v, want a *TaskError", err)
			}
			if te.Kind != meadowrun.KindError || te.Type != tc.wantType || te.Message != "disk on fire" {
				t.Fatalf("TaskError = kind %s, type %q, message %q; want error, %q, %q", te.Kind, te.Type, te.Message, tc.wantType, "disk on fire")
			}
			if !strings.Contains(te.Stack, "Traceback (most recent call last)") || !strings.Contains(te.Stack, "testdata/py/mrtest/fns.py") {
				t.Fatalf("stack is not the Python traceback of the copied module:\n%s", te.Stack)
			}
			if te.Machine == "" || !strings.Contains(te.Machine, n.Hosts["h3"]) {
				t.Fatalf("TaskError names machine %q, want h3 (%s)", te.Machine, n.Hosts["h3"])
			}
		})
	}
}

func TestSSHPythonOutputIsLabelledWithItsTask(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSH(t, n, mrssh.Options{}, "h1")
	o := pyOptions(t, h)
	out := &hosttest.SyncBuffer{}
	o.Output = out
	if _, err := meadowrun.RunMap(context.Background(), pyPrints, []int{10, 11, 12}, h, &meadowrun.MapOptions{Options: *o, Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		for _, want := range []string{fmt.Sprintf("[task %d] hello from %d\n", i, 10+i), fmt.Sprintf("[task %d] to stderr %d\n", i, 10+i)} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
	}
}

func TestSSHMissingPythonInterpreterIsUnsupported(t *testing.T) {
	n := sshtest.Open(t)
	const missing = "/opt/meadowrun-no-such-python/bin/python3"
	t.Run("on every machine: refused at once", func(t *testing.T) {
		h := newSSH(t, n, mrssh.Options{}, "h1", "h2")
		o := pyOptions(t, h)
		o.Deployment = pyDeployment(missing)
		// Without the refusal the pool would wait for capacity forever;
		// the deadline only turns such a hang into a failure.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		_, err := meadowrun.RunMap(ctx, pySquare, []int{1, 2, 3}, h, &meadowrun.MapOptions{Options: *o})
		if !errors.Is(err, meadowrun.ErrUnsupported) {
			t.Fatalf("error = %v, want ErrUnsupported", err)
		}
		for _, want := range []string{missing, n.Hosts["h1"], n.Hosts["h2"], "install it", "PreinstalledInterpreter"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not mention %q: %v", want, err)
			}
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("the refusal took %v", d)
		}
		t.Log(err)
	})
	t.Run("on some machines: the others run the work", func(t *testing.T) {
		// An interpreter only h2 has: a link in its home, which is its own.
		n.Run(t, "h2", `mkdir -p "$HOME/mr-python/bin" && ln -sf /usr/bin/python3 "$HOME/mr-python/bin/python3"`)
		home := strings.TrimSpace(n.Run(t, "h2", `echo "$HOME"`))
		log := &hosttest.SyncBuffer{}
		h := newSSH(t, n, mrssh.Options{Log: log}, "h1", "h2")
		o := pyOptions(t, h)
		o.Deployment = pyDeployment(home + "/mr-python/bin/python3")
		ps, err := meadowrun.RunMap(context.Background(), pyWhere, make([]int, 6), h, &meadowrun.MapOptions{Options: *o, Concurrency: 3})
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range ps {
			if f := strings.Fields(p.SSHConnection); len(f) < 3 || f[2] != n.Hosts["h2"] {
				t.Fatalf("task %d ran with SSH_CONNECTION %q, want on h2 only", i, p.SSHConnection)
			}
		}
		if !strings.Contains(log.String(), n.Hosts["h1"]) || !strings.Contains(log.String(), "mr-python") {
			t.Errorf("the host's log does not say that h1 lacks the interpreter:\n%s", log.String())
		}
	})
}

func TestSSHDetachedPythonFunctionTakesItsFiles(t *testing.T) {
	n, ctx := openDetached(t)
	h := newSSH(t, n, mrssh.Options{}, "h1")
	o := pyOptions(t, h)
	f, err := meadowrun.SubmitFunction(ctx, pyWhere.With(0), h, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	p := attachWait[pyPlace](t, ctx, f.ID())
	if fs := strings.Fields(p.SSHConnection); len(fs) < 3 || fs[2] != n.Hosts["h1"] || p.Module != p.Cwd+"/testdata/py/mrtest/fns.py" {
		t.Fatalf("the detached Python function ran at %+v, want on h1 with the copied module", p)
	}
}
