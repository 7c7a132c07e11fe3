package meadowrun_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/inprocess"
	"github.com/meadowrun-go/meadowrun/internal/pyenv/pyenvtest"
	"github.com/meadowrun-go/meadowrun/internal/pyworker/pytest"
	"github.com/meadowrun-go/meadowrun/local"
)

// Environment deployments on the local host: real virtualenvs of the
// machine's python3, filled by real pip from a wheelhouse the test writes
// (PyPI is never asked: every deployment has --no-index or a loopback
// index).

var (
	pyShout    = meadowrun.Named[pyName, pyText]("mrtest.envfns.shout")
	pyEnvWhere = meadowrun.Named[int, pyEnvPlace]("mrtest.envfns.where")
)

type pyName struct {
	Name string `json:"name"`
}

type pyText struct {
	Text string `json:"text"`
}

// shout runs mrtest.envfns.shout(name) on h.
func shout(h *meadowrun.Host, o *meadowrun.Options, name string) (string, error) {
	r, err := meadowrun.RunFunction(context.Background(), pyShout.With(pyName{name}), h, o)
	return r.Text, err
}

// pyEnvPlace is where mrtest.envfns.where ran.
type pyEnvPlace struct {
	Prefix     string  `json:"prefix"`
	BasePrefix string  `json:"base_prefix"`
	Executable string  `json:"executable"`
	Python     string  `json:"python"`
	MrGreet    *string `json:"mrgreet"`
	VirtualEnv string  `json:"virtual_env"`
}

// envTest is a local host with its own cache directory and a wheelhouse.
type envTest struct {
	host   *meadowrun.Host
	cache  string
	wheels string
	pypath string
}

func newEnvTest(t *testing.T) *envTest {
	t.Helper()
	pytest.Require(t)
	py, err := filepath.Abs(filepath.Join("testdata", "py"))
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	return &envTest{host: newLocal(t, local.Options{CacheDir: cache, LogicalCPU: 2}), cache: cache,
		wheels: pyenvtest.TempWheelhouse(t), pypath: py}
}

// options run d, from the wheelhouse only, with the test package on the
// path.
func (e *envTest) options(t *testing.T, d meadowrun.Deployment) *meadowrun.Options {
	o := quiet(t)
	o.Deployment = d.WithPipOptions(meadowrun.PipOptions{NoIndex: true, FindLinks: []string{e.wheels}}).
		WithEnv(map[string]string{"PYTHONPATH": e.pypath})
	return &o
}

// readyEnvs counts the environments built in the host's cache.
func (e *envTest) readyEnvs(t *testing.T) int {
	ms, _ := filepath.Glob(filepath.Join(e.cache, "envs", "*", ".meadowrun-ready"))
	return len(ms)
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPipRequirementsFileRunsPythonInItsEnvironment(t *testing.T) {
	e := newEnvTest(t)
	ctx := context.Background()
	req := writeFile(t, filepath.Join(t.TempDir(), "requirements.txt"), "mrshout==1.0\nmrgreet==1.0\n")
	o := e.options(t, meadowrun.PipRequirementsFile(req, ""))
	if got, err := shout(e.host, o, "ada"); err != nil || got != "HELLO, ADA (MRGREET 1.0)!" {
		t.Fatalf("shout(ada) = %q, %v", got, err)
	}
	t.Run("the worker runs the environment's interpreter", func(t *testing.T) {
		p, err := meadowrun.RunFunction(ctx, pyEnvWhere.With(0), e.host, o)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p.Prefix, filepath.Join(e.cache, "envs")+"/") || p.Prefix == p.BasePrefix || p.VirtualEnv != p.Prefix {
			t.Fatalf("ran in %+v; want a virtualenv under %s/envs", p, e.cache)
		}
	})
	t.Run("a map's workers share one environment, built once", func(t *testing.T) {
		got, err := meadowrun.RunMap(ctx, pyShout, []pyName{{"a"}, {"b"}, {"c"}, {"d"}}, e.host, &meadowrun.MapOptions{Options: *o, Concurrency: 2})
		if err != nil || len(got) != 4 || got[3].Text != "HELLO, D (MRGREET 1.0)!" {
			t.Fatalf("map = %q, %v", got, err)
		}
		if n := e.readyEnvs(t); n != 1 {
			t.Fatalf("%d environments built, want 1", n)
		}
	})
	t.Run("a command runs with the environment first in PATH", func(t *testing.T) {
		co := &meadowrun.CommandOptions{Options: *o}
		done, err := meadowrun.RunCommand(ctx, []string{"sh", "-c", `test "$(command -v python)" = "$VIRTUAL_ENV/bin/python" && python -c "import mrgreet"`}, e.host, co)
		if err != nil || done.ReturnCode != 0 {
			t.Fatalf("command: %+v, %v", done, err)
		}
	})
	t.Run("changed requirements are another environment, with other workers", func(t *testing.T) {
		writeFile(t, req, "mrshout==1.0\nmrgreet==2.0\n")
		if got, err := shout(e.host, o, "ada"); err != nil || got != "HELLO, ADA (MRGREET 2.0)!" {
			t.Fatalf("shout(ada) after the change = %q, %v; want mrgreet 2.0", got, err)
		}
		if n := e.readyEnvs(t); n != 2 {
			t.Fatalf("%d environments built, want 2", n)
		}
	})
	t.Run("another host of the machine finds the environment built", func(t *testing.T) {
		h2 := newLocal(t, local.Options{CacheDir: e.cache})
		if got, err := shout(h2, o, "bo"); err != nil || got != "HELLO, BO (MRGREET 2.0)!" {
			t.Fatalf("shout(bo) = %q, %v", got, err)
		}
		if n := e.readyEnvs(t); n != 2 {
			t.Fatalf("%d environments built, want still 2", n)
		}
	})
}

func TestPipOptionsReachPip(t *testing.T) {
	e := newEnvTest(t)
	req := writeFile(t, filepath.Join(t.TempDir(), "requirements.txt"), "mrshout==1.0\n")
	o := quiet(t)
	o.Deployment = meadowrun.PipRequirementsFile(req, "").
		WithPipOptions(meadowrun.PipOptions{IndexURL: pyenvtest.Index(t, e.wheels)}).
		WithEnv(map[string]string{"PYTHONPATH": e.pypath})
	if got, err := shout(e.host, &o, "x"); err != nil || got != "HELLO, X (MRGREET 2.0)!" {
		t.Fatalf("shout(x) from the index = %q, %v", got, err)
	}
}

func TestPoetryProjectPathInstallsItsLockedPackages(t *testing.T) {
	e := newEnvTest(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pyproject.toml"), "[tool.poetry]\nname = \"app\"\nversion = \"0.1.0\"\n")
	writeFile(t, filepath.Join(dir, "poetry.lock"), `[[package]]
name = "mrgreet"
version = "1.0"
description = ""
optional = false
python-versions = "*"
files = []

[[package]]
name = "mrshout"
version = "1.0"
description = ""
optional = false
python-versions = "*"
files = []

[package.dependencies]
mrgreet = ">=1.0"

[metadata]
lock-version = "2.0"
python-versions = "^3.8"
content-hash = "0"
`)
	o := e.options(t, meadowrun.PoetryProjectPath(dir, ""))
	if got, err := shout(e.host, o, "ada"); err != nil || got != "HELLO, ADA (MRGREET 1.0)!" {
		t.Fatalf("shout(ada) = %q, %v; want the locked mrgreet 1.0", got, err)
	}
}

func TestLocalPipInterpreterRecreatesTheVirtualenv(t *testing.T) {
	e := newEnvTest(t)
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command("python3", "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Fatalf("python3 -m venv: %v: %s", err, out)
	}
	python := filepath.Join(venv, "bin", "python")
	if out, err := exec.Command(python, "-m", "pip", "install", "--no-index", "--find-links", e.wheels, "mrgreet==1.0").CombinedOutput(); err != nil {
		t.Fatalf("pip install: %v: %s", err, out)
	}
	p, err := meadowrun.RunFunction(context.Background(), pyEnvWhere.With(0), e.host, e.options(t, meadowrun.LocalPipInterpreter(python)))
	if err != nil {
		t.Fatal(err)
	}
	if p.MrGreet == nil || *p.MrGreet != "1.0" || p.Prefix == venv || !strings.HasPrefix(p.Prefix, e.cache) {
		t.Fatalf("ran in %+v; want a copy of the virtualenv (mrgreet 1.0) under %s", p, e.cache)
	}
}

func TestADetachedFunctionBuildsItsEnvironmentWhereItRuns(t *testing.T) {
	e := newEnvTest(t)
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // the supervisor's local host's cache
	req := writeFile(t, filepath.Join(t.TempDir(), "requirements.txt"), "mrshout==1.0\nmrgreet==1.0\n")
	o := e.options(t, meadowrun.PipRequirementsFile(req, ""))
	ctx := context.Background()
	d, err := meadowrun.SubmitFunction(ctx, pyShout.With(pyName{"det"}), meadowrun.Local(), o, &meadowrun.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The supervisor builds what was submitted, not the file as it is
	// now.
	writeFile(t, req, "nosuchpackage==9\n")
	a, err := meadowrun.Attach[pyText](ctx, d.ID())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := a.Wait(ctx); v.Text != "HELLO, DET (MRGREET 1.0)!" || err != nil {
		t.Fatalf("attached: %q, %v", v, err)
	}
}

func TestEnvironmentDeploymentsThatCannotWorkSayWhy(t *testing.T) {
	e := newEnvTest(t)
	t.Setenv("CONDA_EXE", "")
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good.txt"), "mrgreet==1.0\n")
	env := writeFile(t, filepath.Join(dir, "environment.yml"), "name: x\ndependencies:\n  - python=3.11\n")
	tests := []struct {
		name string
		d    meadowrun.Deployment
		kind error
		want []string
	}{
		{"requirements pip cannot resolve quote pip",
			meadowrun.PipRequirementsFile(writeFile(t, filepath.Join(dir, "bad.txt"), "mrgreet==1.0\nnosuchpackage==1.2\n"), ""),
			meadowrun.ErrEnvironment, []string{"No matching distribution found for nosuchpackage==1.2"}},
		{"a Python version the machine lacks says which is needed and which is there",
			meadowrun.PipRequirementsFile(good, "3.99"), meadowrun.ErrUnsupported, []string{"needs Python 3.99", "is Python 3."}},
		{"a requirements file that is not there", meadowrun.PipRequirementsFile(filepath.Join(dir, "nosuch.txt"), ""),
			meadowrun.ErrInvalidOptions, []string{"nosuch.txt"}},
		{"a version that is not one", meadowrun.PipRequirementsFile(good, "python3"), meadowrun.ErrInvalidOptions, []string{`"python3"`}},
		{"a local interpreter that is not there", meadowrun.LocalPipInterpreter(filepath.Join(dir, "venv", "bin", "python")),
			meadowrun.ErrInvalidOptions, []string{"LocalPipInterpreter", "venv/bin/python"}},
		{"a poetry project without a lock", meadowrun.PoetryProjectPath(dir, ""), meadowrun.ErrInvalidOptions, []string{"poetry lock"}},
		{"a conda file on a machine without conda says to install it", meadowrun.CondaEnvironmentFile(env),
			meadowrun.ErrUnsupported, []string{"conda is not installed", "install Miniconda"}},
		{"a local conda environment without conda here says to install it", meadowrun.LocalCondaInterpreter("myenv"),
			meadowrun.ErrUnsupported, []string{"LocalCondaInterpreter", "conda is not installed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := e.options(t, tc.d)
			if strings.Contains(tc.name, "conda") {
				o.Deployment = tc.d // no pip options
			}
			_, err := shout(e.host, o, "x")
			if !errors.Is(err, tc.kind) {
				t.Fatalf("error = %v, want %v", err, tc.kind)
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error = %v\nwant it to say %q", err, w)
				}
			}
		})
	}
	t.Run("pip options on a conda environment are refused", func(t *testing.T) {
		o := e.options(t, meadowrun.CondaEnvironmentFile(env))
		_, err := shout(e.host, o, "x")
		if !errors.Is(err, meadowrun.ErrInvalidOptions) || !strings.Contains(err.Error(), "pip options apply to pip environments") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("hosts without environment deployments refuse them", func(t *testing.T) {
		o := quiet(t)
		o.Deployment = meadowrun.PipRequirementsFile(good, "")
		if _, err := shout(inprocess.NewHost(1), &o, "x"); !errors.Is(err, meadowrun.ErrUnsupported) {
			t.Fatalf("error = %v, want ErrUnsupported", err)
		}
	})
}
