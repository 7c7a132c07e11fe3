package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/pyenv/pyenvtest"
)

func TestMapOfAPythonFunction(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("MEADOWRUN_REQUIRE_PYTHON") == "1" {
			t.Fatalf("python3 is required (MEADOWRUN_REQUIRE_PYTHON=1) but not found: %v", err)
		}
		t.Skipf("python3 not found: %v", err)
	}
	u := newUser(t)
	u.env = append(u.env, "XDG_CACHE_HOME="+t.TempDir())
	// The module is in the working directory, where the worker imports
	// it from.
	os.MkdirAll(filepath.Join(u.dir, "clipkg"), 0o755)
	os.WriteFile(filepath.Join(u.dir, "clipkg", "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(u.dir, "clipkg", "fns.py"), []byte(`
def double(x):
    print("doubling", x)
    return x * 2

def boom(x):
    raise KeyError(x)
`), 0o644)

	t.Run("results are printed one JSON line per task in task order", func(t *testing.T) {
		r := u.run("", "map", "--python", "clipkg.fns.double", ":::", "1", "[1, 2]", "word")
		u.want(r, 0, nil, []string{"[task 0] doubling 1\n", "3 tasks, 3 succeeded"})
		if want := "2\n[1,2,1,2]\n\"wordword\"\n"; r.stdout != want {
			t.Fatalf("stdout %q, want %q", r.stdout, want)
		}
	})
	t.Run("inputs are read from stdin", func(t *testing.T) {
		r := u.run("5\n6\n", "map", "--python", "--interpreter", "python3", "clipkg.fns.double")
		u.want(r, 0, nil, nil)
		if r.stdout != "10\n12\n" {
			t.Fatalf("stdout %q", r.stdout)
		}
	})
	t.Run("a failed task is listed and exits 1", func(t *testing.T) {
		r := u.run("", "map", "--python", "clipkg.fns.boom", ":::", "7")
		u.want(r, 1, []string{"null\n"}, []string{"1 task failed", `task 0 (input "7")`})
	})
	t.Run("an unknown function is named", func(t *testing.T) {
		r := u.run("", "map", "--python", "clipkg.nosuch.f", ":::", "7")
		u.want(r, 1, nil, []string{"clipkg.nosuch"})
	})
	t.Run("with --json each task's value or remote exception is a JSON line", func(t *testing.T) {
		r := u.run("", "map", "--python", "--json", "clipkg.fns.boom", ":::", "7")
		u.want(r, 1, []string{`"error_type":"KeyError"`, `"ok":false`, `"traceback":"Traceback (most recent call last):`}, []string{"1 task failed"})
		r = u.run("", "map", "--python", "--json", "clipkg.fns.double", ":::", "[1]")
		u.want(r, 0, []string{`"ok":true`, `"value":[1,1]`}, nil)
		if strings.Count(r.stdout, "\n") != 1 {
			t.Fatalf("stdout %q: want one JSON line", r.stdout)
		}
	})
	t.Run("--function-file names the function", func(t *testing.T) {
		os.WriteFile(filepath.Join(u.dir, "fn.txt"), []byte("clipkg.fns.double\n"), 0o644)
		r := u.run("4\n", "map", "--python", "--function-file", "fn.txt")
		u.want(r, 0, nil, nil)
		if r.stdout != "8\n" {
			t.Fatalf("stdout %q", r.stdout)
		}
		r = u.run("", "map", "--python", "--function-file", "fn.txt", "clipkg.fns.boom", ":::", "1")
		u.want(r, 2, nil, []string{"give one"})
	})
	t.Run("a detached map is attached to with its values and exceptions", func(t *testing.T) {
		r := u.run("", "map", "--python", "--detach", "clipkg.fns.double", ":::", "1", "[2]")
		u.want(r, 0, nil, []string{"submitted"})
		id := strings.TrimSpace(r.stdout)
		r = u.run("", "attach", "--json", id)
		u.want(r, 0, []string{`"task":0`, `"value":2`, `"value":[2,2]`}, []string{"2 tasks, 2 succeeded"})
		r = u.run("", "map", "--python", "--detach", "--json", "clipkg.fns.boom", ":::", "1")
		u.want(r, 0, []string{`{"id":`}, nil)
		var sub struct{ ID string }
		if err := json.Unmarshal([]byte(r.stdout), &sub); err != nil {
			t.Fatalf("stdout %q: %v", r.stdout, err)
		}
		r = u.run("", "attach", "--json", sub.ID)
		u.want(r, 1, []string{`"error_type":"KeyError"`, `"traceback":`}, []string{"1 task failed"})
	})
	t.Run("--glob and --function-file are for Python functions", func(t *testing.T) {
		r := u.run("", "map", "--glob", "clipkg", "--", "echo", ":::", "1")
		u.want(r, 2, nil, []string{"--glob is for Python functions"})
		r = u.run("", "map", "--python", "--glob", "clipkg", "clipkg.fns.double", ":::", "2")
		u.want(r, 0, []string{"4\n"}, nil)
	})
}

func TestMapOfAPythonFunctionInARequirementsEnvironment(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("MEADOWRUN_REQUIRE_PYTHON") == "1" {
			t.Fatalf("python3 is required (MEADOWRUN_REQUIRE_PYTHON=1) but not found: %v", err)
		}
		t.Skipf("python3 not found: %v", err)
	}
	u := newUser(t)
	u.env = append(u.env, "XDG_CACHE_HOME="+t.TempDir())
	wheels := pyenvtest.TempWheelhouse(t)
	os.MkdirAll(filepath.Join(u.dir, "clienv"), 0o755)
	os.WriteFile(filepath.Join(u.dir, "clienv", "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(u.dir, "clienv", "fns.py"), []byte(`
def greet(name):
    import mrgreet
    return mrgreet.greet(name)
`), 0o644)
	os.WriteFile(filepath.Join(u.dir, "requirements.txt"), []byte("mrgreet==1.0\n"), 0o644)
	t.Run("the function runs with the requirements installed", func(t *testing.T) {
		r := u.run("", "map", "--python", "clienv.fns.greet", "--requirements", "requirements.txt", "--no-index", "--find-links", wheels, ":::", "ada", "bo")
		u.want(r, 0, nil, []string{"2 tasks, 2 succeeded"})
		if want := "\"hello, ada (mrgreet 1.0)\"\n\"hello, bo (mrgreet 1.0)\"\n"; r.stdout != want {
			t.Fatalf("stdout %q, want %q", r.stdout, want)
		}
	})
	t.Run("requirements pip cannot resolve quote pip", func(t *testing.T) {
		os.WriteFile(filepath.Join(u.dir, "bad.txt"), []byte("nosuchpackage==3\n"), 0o644)
		r := u.run("", "map", "--python", "clienv.fns.greet", "--requirements", "bad.txt", "--no-index", ":::", "ada")
		u.want(r, 1, nil, []string{"No matching distribution found for nosuchpackage==3"})
	})
	t.Run("a command runs in the environment", func(t *testing.T) {
		r := u.run("", "run", "--requirements", "requirements.txt", "--no-index", "--find-links", wheels, "--",
			"sh", "-c", `test "$(command -v python)" = "$VIRTUAL_ENV/bin/python" && python -c "import mrgreet; print(mrgreet.greet('cy'))"`)
		u.want(r, 0, []string{"hello, cy (mrgreet 1.0)"}, nil)
	})
	t.Run("a command in an environment and an image is refused", func(t *testing.T) {
		r := u.run("", "run", "--requirements", "requirements.txt", "--image", "python:3.11", "--", "true")
		u.want(r, 2, nil, []string{"--image and an environment flag"})
	})
	t.Run("environment flags without --python are refused", func(t *testing.T) {
		r := u.run("", "map", "--requirements", "requirements.txt", "--", "echo", ":::", "a")
		u.want(r, 2, nil, []string{"--requirements is for Python functions"})
	})
	t.Run("two environments are refused", func(t *testing.T) {
		r := u.run("", "map", "--python", "clienv.fns.greet", "--requirements", "requirements.txt", "--poetry", ".", ":::", "a")
		u.want(r, 2, nil, []string{"--requirements and --poetry"})
	})
}
