package pyenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meadowrun-go/meadowrun/driver"
)

// Builder builds environments into Dir and finds them there again. The
// zero value is not usable: Dir must be set. A Builder is safe for
// concurrent use; builders of several processes may share Dir.
type Builder struct {
	// Dir holds the environments, one directory per hash, with the lock
	// and log file of each next to it.
	Dir string
	// Conda is the conda program; "" means $CONDA_EXE, or conda in PATH.
	Conda string
	// Timeout bounds one build; 0 means DefaultTimeout.
	Timeout time.Duration

	mu     sync.Mutex
	calls  map[string]*call
	builds atomic.Int64
}

// DefaultTimeout bounds a build when Builder.Timeout is 0.
const DefaultTimeout = 30 * time.Minute

// Env is a built environment.
type Env struct {
	// Dir is the environment's prefix: the virtualenv or conda prefix.
	Dir string `json:"dir"`
	// Python is its interpreter, Version that interpreter's version.
	Python  string `json:"python"`
	Version string `json:"version"`
	// Hit is set when the environment was already built.
	Hit bool `json:"-"`
}

// call is one build in progress, shared by the callers of the process.
type call struct {
	done chan struct{}
	env  Env
	err  error
}

// readyFile, inside an environment's directory, is written last, by
// rename, when the build succeeded: without it the directory is the
// remains of a build that failed or was interrupted.
const readyFile = ".meadowrun-ready"

// Builds returns how many environments this Builder has built (not found
// ready): a cache hit builds none.
func (b *Builder) Builds() int64 { return b.builds.Load() }

// Path returns the directory of e's environment under b.Dir. Hashes are
// cut to 24 hex digits (96 bits) to keep the interpreter's path, which
// pip writes into script shebangs, short.
func (b *Builder) Path(e *driver.Environment) string {
	return filepath.Join(b.Dir, e.Hash()[:24])
}

// Ensure returns e's environment, building it if it is not ready yet.
// Concurrent calls for the same environment, in this process or others
// sharing Dir, build it once; the others wait for that build. Cancelling
// ctx returns at once, but a build that started goes on to its end (or
// Timeout), so that it is not wasted.
//
// Errors wrap driver.ErrUnsupported when the machine lacks what the
// environment needs (the Python version, conda, venv), another machine
// may have it; driver.ErrEnvironment when the specification itself
// cannot be built (pip's or conda's error is quoted).
func (b *Builder) Ensure(ctx context.Context, e *driver.Environment) (Env, error) {
	if e == nil {
		return Env{}, errors.New("pyenv: no environment")
	}
	dir := b.Path(e)
	if env, ok := ready(dir); ok {
		return env, nil
	}
	b.mu.Lock()
	c := b.calls[dir]
	if c == nil {
		if b.calls == nil {
			b.calls = map[string]*call{}
		}
		c = &call{done: make(chan struct{})}
		b.calls[dir] = c
		timeout := b.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		go func() {
			defer cancel()
			c.env, c.err = b.build(bctx, e, dir)
			b.mu.Lock()
			delete(b.calls, dir)
			b.mu.Unlock()
			close(c.done)
		}()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.env, c.err
	case <-ctx.Done():
		return Env{}, ctx.Err()
	}
}

// ready returns the environment of dir if its build finished and its
// interpreter is still there (a virtualenv's links to the interpreter it
// was made with).
func ready(dir string) (Env, bool) {
	b, err := os.ReadFile(filepath.Join(dir, readyFile))
	if err != nil {
		return Env{}, false
	}
	var env Env
	if json.Unmarshal(b, &env) != nil || env.Python == "" {
		return Env{}, false
	}
	if _, err := os.Stat(env.Python); err != nil {
		return Env{}, false
	}
	env.Dir, env.Hit = dir, true
	return env, true
}

// build builds e into dir under the lock of dir, unless another process
// did while this one waited for the lock.
func (b *Builder) build(ctx context.Context, e *driver.Environment, dir string) (Env, error) {
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return Env{}, fmt.Errorf("pyenv: %w", err)
	}
	unlock, err := lock(ctx, dir+".lock")
	if err != nil {
		return Env{}, fmt.Errorf("pyenv: locking the environment %s: %w", filepath.Base(dir), err)
	}
	defer unlock()
	if env, ok := ready(dir); ok {
		return env, nil
	}
	// What is there is what a failed or interrupted build left.
	if err := os.RemoveAll(dir); err != nil {
		return Env{}, fmt.Errorf("pyenv: clearing the environment %s: %w", filepath.Base(dir), err)
	}
	logPath := dir + ".log"
	log, err := os.Create(logPath)
	if err != nil {
		return Env{}, fmt.Errorf("pyenv: %w", err)
	}
	defer log.Close()
	t0 := time.Now()
	fmt.Fprintf(log, "meadowrun: building a %s environment for Python %q in %s\n", e.Manager, e.Python, dir)
	var env Env
	switch e.Manager {
	case driver.ManagerPip:
		env, err = b.buildPip(ctx, e, dir, log)
	case driver.ManagerConda:
		env, err = b.buildConda(ctx, e, dir, log)
	default:
		err = fmt.Errorf("pyenv: unknown package manager %q: %w", e.Manager, driver.ErrUnsupported)
	}
	if err != nil {
		fmt.Fprintf(log, "meadowrun: failed after %s: %v\n", time.Since(t0).Round(time.Millisecond), err)
		os.RemoveAll(dir)
		return Env{}, err
	}
	env.Dir = dir
	if err := markReady(dir, env); err != nil {
		os.RemoveAll(dir)
		return Env{}, fmt.Errorf("pyenv: %w", err)
	}
	fmt.Fprintf(log, "meadowrun: ready after %s\n", time.Since(t0).Round(time.Millisecond))
	b.builds.Add(1)
	return env, nil
}

// markReady writes dir's ready marker, atomically.
func markReady(dir string, env Env) error {
	data, err := json.Marshal(env)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".ready-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, readyFile))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// lockPoll is how often a builder waiting for another's lock tries again.
const lockPoll = 50 * time.Millisecond

// lock takes the exclusive lock of path, waiting while another process
// (or another open file of this one) holds it, until ctx ends. The lock
// goes with the process, so a builder that dies frees it.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, err
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, ctx.Err()
		}
	}
}

// buildPip makes a virtualenv of the machine's Python in dir and installs
// the requirements into it. When the base interpreter has a pip that can
// install into another interpreter (pip 22.3 or later, --python), the
// virtualenv is made without a pip of its own, which takes a fraction of
// the time; otherwise venv installs pip into it (ensurepip) and that pip
// installs the requirements.
func (b *Builder) buildPip(ctx context.Context, e *driver.Environment, dir string, log *os.File) (Env, error) {
	base, version, err := FindPython(ctx, e.Python)
	if err != nil {
		return Env{}, err
	}
	fmt.Fprintf(log, "meadowrun: base interpreter %s (Python %s)\n", base, version)
	python := filepath.Join(dir, "bin", "python")
	req := dir + ".requirements.txt"
	if err := os.WriteFile(req, []byte(e.Spec), 0o644); err != nil {
		return Env{}, fmt.Errorf("pyenv: %w", err)
	}
	defer os.Remove(req)
	install := append([]string{"install", "--no-input", "--disable-pip-version-check", "-r", req}, e.Pip.Args()...)
	empty := strings.TrimSpace(e.Spec) == ""

	out, err := run(ctx, log, base, "-m", "venv", "--without-pip", dir)
	if err == nil && !empty {
		out, err = run(ctx, log, base, append([]string{"-m", "pip", "--python", python}, install...)...)
		if err != nil && (bytes.Contains(out, []byte("No module named pip")) || bytes.Contains(out, []byte("no such option: --python"))) {
			// No pip that can do it: a virtualenv with its own pip.
			os.RemoveAll(dir)
			if out, err = run(ctx, log, base, "-m", "venv", dir); err == nil {
				out, err = run(ctx, log, python, append([]string{"-m", "pip"}, install...)...)
			} else {
				return Env{}, venvError(base, out, err)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return Env{}, fmt.Errorf("pyenv: pip install: %w", ctx.Err())
			}
			return Env{}, fmt.Errorf("pyenv: %w: pip install -r requirements failed (%v): %s (full output in %s on the machine)",
				driver.ErrEnvironment, err, quote(out), log.Name())
		}
	} else if err != nil {
		return Env{}, venvError(base, out, err)
	}
	return Env{Python: python, Version: version}, nil
}

// venvError is the error of a venv module that failed: the machine's
// Python lacks something (Debian's python3-venv).
func venvError(base string, out []byte, err error) error {
	return fmt.Errorf("pyenv: %s -m venv failed on this machine: %w (%v): %s; the machine needs Python's venv module "+
		"with ensurepip (on Debian and Ubuntu: apt-get install python3-venv)", base, driver.ErrUnsupported, err, quote(out))
}

// buildConda creates a conda environment at prefix dir from the
// environment file.
func (b *Builder) buildConda(ctx context.Context, e *driver.Environment, dir string, log *os.File) (Env, error) {
	conda, err := FindConda(b.Conda)
	if err != nil {
		return Env{}, fmt.Errorf("pyenv: the environment is a conda environment, but %w", err)
	}
	// conda creates the prefix itself and refuses one that exists, so
	// the file lies next to it.
	var args []string
	file := dir + ".yml"
	if e.Format == driver.CondaList {
		file = dir + ".txt"
		args = []string{"create", "--yes", "--prefix", dir, "--file", file}
	} else {
		args = []string{"env", "create", "--prefix", dir, "--file", file}
	}
	if err := os.WriteFile(file, []byte(e.Spec), 0o644); err != nil {
		return Env{}, fmt.Errorf("pyenv: %w", err)
	}
	defer os.Remove(file)
	if out, err := run(ctx, log, conda, args...); err != nil {
		if ctx.Err() != nil {
			return Env{}, fmt.Errorf("pyenv: conda: %w", ctx.Err())
		}
		return Env{}, fmt.Errorf("pyenv: %w: %s %s failed (%v): %s (full output in %s on the machine)",
			driver.ErrEnvironment, conda, strings.Join(args[:len(args)-4], " "), err, quote(out), log.Name())
	}
	python := filepath.Join(dir, "bin", "python")
	version, err := Version(ctx, python)
	if err != nil {
		return Env{}, fmt.Errorf("pyenv: %w: the conda environment has no working Python (%v): add python to its dependencies", driver.ErrEnvironment, err)
	}
	if !VersionMatches(e.Python, version) {
		return Env{}, fmt.Errorf("pyenv: %w: the environment needs Python %s, but conda made one with Python %s", driver.ErrEnvironment, e.Python, version)
	}
	return Env{Python: python, Version: version}, nil
}

// run runs a program, its output both returned and appended to log.
func run(ctx context.Context, log *os.File, name string, args ...string) ([]byte, error) {
	fmt.Fprintf(log, "$ %s %s\n", name, strings.Join(args, " "))
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.Env = append(os.Environ(), "PIP_NO_INPUT=1", "PYTHONDONTWRITEBYTECODE=1")
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	log.Write(out.Bytes())
	return out.Bytes(), err
}

// quote is the part of a tool's output that says what went wrong: its
// lines that start with ERROR (pip) or mention an error (conda), or else
// its last lines.
func quote(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var errs []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "ERROR") || strings.Contains(t, "Error:") || strings.HasPrefix(t, "error:") {
			errs = append(errs, t)
		}
	}
	if len(errs) == 0 {
		errs = lines[max(0, len(lines)-12):]
	}
	if len(errs) > 20 {
		errs = errs[len(errs)-20:]
	}
	return strings.Join(errs, "\n")
}
