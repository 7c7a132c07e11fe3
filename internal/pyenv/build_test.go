package pyenv_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/pyenv"
	"github.com/meadowrun-go/meadowrun/internal/pyenv/pyenvtest"
	"github.com/meadowrun-go/meadowrun/internal/pyworker/pytest"
)

// These tests build real virtualenvs with the machine's python3 and real
// pip, installing from a wheelhouse written by the test (never PyPI).

// pipEnv is a pip environment of requirements installed from the
// wheelhouse dir only.
func pipEnv(requirements, wheels string) *driver.Environment {
	return &driver.Environment{Manager: driver.ManagerPip, Spec: requirements,
		Pip: driver.PipOptions{NoIndex: true, FindLinks: []string{wheels}}}
}

// pyRun runs code with python and returns its output.
func pyRun(t *testing.T, python, code string) string {
	t.Helper()
	out, err := exec.Command(python, "-c", code).CombinedOutput()
	if err != nil {
		t.Fatalf("%s -c %q: %v: %s", python, code, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestAPipEnvironmentIsBuiltOnceAndFoundAgain(t *testing.T) {
	pytest.Require(t)
	wheels := pyenvtest.TempWheelhouse(t)
	b := &pyenv.Builder{Dir: t.TempDir()}
	e := pipEnv("mrshout==1.0\n", wheels)
	ctx := context.Background()
	env, err := b.Ensure(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if env.Hit || b.Builds() != 1 {
		t.Fatalf("first Ensure: hit %v, %d builds; want a build", env.Hit, b.Builds())
	}
	if got := pyRun(t, env.Python, "import mrshout; print(mrshout.shout('ada'))"); got != "HELLO, ADA (MRGREET 2.0)!" {
		t.Fatalf("mrshout.shout = %q; want mrshout with its dependency, the newest mrgreet", got)
	}
	t.Run("the environment is isolated from the base interpreter's packages", func(t *testing.T) {
		if got := pyRun(t, env.Python, "import sys; print(sys.prefix != sys.base_prefix)"); got != "True" {
			t.Fatalf("sys.prefix is the base prefix: not a virtualenv")
		}
	})
	t.Run("a second Ensure finds it without building", func(t *testing.T) {
		t0 := time.Now()
		again, err := b.Ensure(ctx, e)
		took := time.Since(t0)
		if err != nil || !again.Hit || again.Python != env.Python || b.Builds() != 1 {
			t.Fatalf("second Ensure: %+v, %v, %d builds; want a hit", again, err, b.Builds())
		}
		t.Logf("cache hit in %s", took)
	})
	t.Run("another builder of the same directory finds it too", func(t *testing.T) {
		other := &pyenv.Builder{Dir: b.Dir}
		again, err := other.Ensure(ctx, e)
		if err != nil || !again.Hit || other.Builds() != 0 {
			t.Fatalf("Ensure of another builder: %+v, %v, %d builds; want a hit", again, err, other.Builds())
		}
	})
	t.Run("a different requirement is another environment", func(t *testing.T) {
		old := pipEnv("mrgreet==1.0\n", wheels)
		env1, err := b.Ensure(ctx, old)
		if err != nil || env1.Dir == env.Dir {
			t.Fatalf("Ensure(mrgreet==1.0): %+v, %v; want its own directory", env1, err)
		}
		if got := pyRun(t, env1.Python, "import mrgreet; print(mrgreet.__version__)"); got != "1.0" {
			t.Fatalf("mrgreet version %q, want 1.0", got)
		}
	})
}

func TestConcurrentBuildersBuildAnEnvironmentOnce(t *testing.T) {
	pytest.Require(t)
	wheels := pyenvtest.TempWheelhouse(t)
	dir := t.TempDir()
	// Two builders stand for two processes: they share only the
	// directory, and so its lock file.
	bs := []*pyenv.Builder{{Dir: dir}, {Dir: dir}}
	e := pipEnv("mrgreet==1.0\n", wheels)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	pythons := make([]string, 6)
	for i := range errs {
		wg.Go(func() {
			env, err := bs[i%2].Ensure(context.Background(), e)
			errs[i], pythons[i] = err, env.Python
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Ensure %d: %v", i, err)
		}
		if pythons[i] != pythons[0] {
			t.Fatalf("Ensure %d gave %s, Ensure 0 %s", i, pythons[i], pythons[0])
		}
	}
	if n := bs[0].Builds() + bs[1].Builds(); n != 1 {
		t.Fatalf("%d builds of one environment, want 1", n)
	}
}

func TestAnInterruptedBuildIsBuiltAgain(t *testing.T) {
	pytest.Require(t)
	wheels := pyenvtest.TempWheelhouse(t)
	b := &pyenv.Builder{Dir: t.TempDir()}
	e := pipEnv("mrgreet==1.0\n", wheels)
	// What a builder killed half-way leaves: a directory without its
	// ready marker.
	if err := os.MkdirAll(filepath.Join(b.Path(e), "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	env, err := b.Ensure(context.Background(), e)
	if err != nil || env.Hit || b.Builds() != 1 {
		t.Fatalf("Ensure: %+v, %v, %d builds; want a fresh build", env, err, b.Builds())
	}
	if got := pyRun(t, env.Python, "import mrgreet; print(mrgreet.__version__)"); got != "1.0" {
		t.Fatalf("mrgreet version %q, want 1.0", got)
	}
}

func TestPipOptionsPassThrough(t *testing.T) {
	pytest.Require(t)
	wheels := pyenvtest.TempWheelhouse(t)
	index := pyenvtest.Index(t, wheels)
	b := &pyenv.Builder{Dir: t.TempDir()}
	tests := []struct {
		name string
		pip  driver.PipOptions
	}{
		{"an index URL replaces PyPI", driver.PipOptions{IndexURL: index}},
		// PyPI itself is unreachable here: the index URL stands in for
		// it, and the extra index is what has the package.
		{"an extra index is searched too", driver.PipOptions{IndexURL: index + "/../nothing-here/", ExtraIndexURLs: []string{index}}},
		{"find-links without an index", driver.PipOptions{NoIndex: true, FindLinks: []string{wheels}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := &driver.Environment{Manager: driver.ManagerPip, Spec: "mrshout==1.0\nmrgreet==1.0\n", Pip: tc.pip}
			env, err := b.Ensure(context.Background(), e)
			if err != nil {
				t.Fatal(err)
			}
			if got := pyRun(t, env.Python, "import mrshout; print(mrshout.shout('x'))"); got != "HELLO, X (MRGREET 1.0)!" {
				t.Fatalf("shout = %q", got)
			}
		})
	}
}

func TestEnvironmentsThatCannotBeBuiltSayWhy(t *testing.T) {
	pytest.Require(t)
	wheels := pyenvtest.TempWheelhouse(t)
	b := &pyenv.Builder{Dir: t.TempDir()}
	tests := []struct {
		name string
		env  *driver.Environment
		kind error
		want []string
	}{
		{"requirements pip cannot resolve quote pip's error", pipEnv("mrgreet==1.0\nnosuchpackage==1.2\n", wheels),
			driver.ErrEnvironment, []string{"No matching distribution found for nosuchpackage==1.2", "pip install -r requirements failed"}},
		{"conflicting requirements quote pip's error", pipEnv("mrshout==1.0\nmrgreet==0.5\n", wheels),
			driver.ErrEnvironment, []string{"mrgreet==0.5"}},
		{"a Python version the machine lacks names both versions",
			&driver.Environment{Manager: driver.ManagerPip, Spec: "mrgreet\n", Python: "3.99"},
			driver.ErrUnsupported, []string{"needs Python 3.99", "no python3.99", "python3 (", "is Python 3."}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Ensure(context.Background(), tc.env)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("error = %v, want %v", err, tc.kind)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error = %v, want it to say %q", err, w)
				}
			}
			if _, err := os.Stat(b.Path(tc.env)); !os.IsNotExist(err) {
				t.Fatalf("a failed build left its directory (%v)", err)
			}
		})
	}
	if b.Builds() != 0 {
		t.Fatalf("%d builds counted, want 0", b.Builds())
	}
}

func TestTheMachinesPythonVersionIsMatched(t *testing.T) {
	pytest.Require(t)
	have, err := pyenv.Version(context.Background(), "python3")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"", pyenv.MinorVersion(have), have} {
		p, v, err := pyenv.FindPython(context.Background(), want)
		if err != nil || !pyenv.VersionMatches(want, v) || p == "" {
			t.Fatalf("FindPython(%q) = %s, %s, %v; python3 is %s", want, p, v, err, have)
		}
	}
	tests := []struct {
		want, have string
		ok         bool
	}{
		{"", "3.11.2", true}, {"3.11", "3.11.2", true}, {"3.11.2", "3.11.2", true},
		{"3.1", "3.11.2", false}, {"3.11.1", "3.11.2", false}, {"3.12", "3.11.2", false},
	}
	for _, tc := range tests {
		if got := pyenv.VersionMatches(tc.want, tc.have); got != tc.ok {
			t.Errorf("VersionMatches(%q, %q) = %v, want %v", tc.want, tc.have, got, tc.ok)
		}
	}
	for _, bad := range []string{"3", "python3.11", "2.7", "3.x", "3.11.2.1"} {
		if pyenv.CheckVersion(bad) == nil {
			t.Errorf("CheckVersion(%q) accepted it", bad)
		}
	}
}

func TestFreezeRecreatesALocalVirtualenv(t *testing.T) {
	pytest.Require(t)
	wheels := pyenvtest.TempWheelhouse(t)
	// A virtualenv of the user's, made the ordinary way, with pip in it.
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command("python3", "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Fatalf("python3 -m venv: %v: %s", err, out)
	}
	python := filepath.Join(venv, "bin", "python")
	if out, err := exec.Command(python, "-m", "pip", "install", "--no-index", "--find-links", wheels, "mrshout==1.0", "mrgreet==1.0").CombinedOutput(); err != nil {
		t.Fatalf("pip install: %v: %s", err, out)
	}
	e, err := pyenv.Freeze(context.Background(), python)
	if err != nil {
		t.Fatal(err)
	}
	have, _ := pyenv.Version(context.Background(), python)
	if e.Manager != driver.ManagerPip || e.Python != pyenv.MinorVersion(have) ||
		!strings.Contains(e.Spec, "mrgreet==1.0") || !strings.Contains(e.Spec, "mrshout==1.0") {
		t.Fatalf("Freeze = %+v; want mrgreet==1.0 and mrshout==1.0 for Python %s", e, pyenv.MinorVersion(have))
	}
	e.Pip = driver.PipOptions{NoIndex: true, FindLinks: []string{wheels}}
	env, err := (&pyenv.Builder{Dir: t.TempDir()}).Ensure(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if got := pyRun(t, env.Python, "import mrshout; print(mrshout.shout('x'))"); got != "HELLO, X (MRGREET 1.0)!" {
		t.Fatalf("the re-created environment's shout = %q", got)
	}
	t.Run("an interpreter that is not there is a clear error", func(t *testing.T) {
		_, err := pyenv.Freeze(context.Background(), filepath.Join(venv, "bin", "nosuch"))
		if err == nil || !strings.Contains(err.Error(), "nosuch") {
			t.Fatalf("error = %v, want it to name the interpreter", err)
		}
	})
}
