// Command pyenvbench measures Python environment deployments on the local
// host: the first run of a PipRequirementsFile deployment (the machine
// builds the virtualenv) and later runs with the requirements file
// unchanged (the environment is found ready), each from a fresh host so
// that every run starts its worker, next to the same function run with
// PreinstalledInterpreter. It also times what a cache hit costs alone:
// resolving the deployment (reading the file, hashing the specification)
// plus finding the environment ready, as a fresh process does. pip
// installs from a wheelhouse written here (never PyPI).
//
//	go run ./bench/cmd/pyenvbench [-quick]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/bench/internal/benchmain"
	"github.com/meadowrun-go/meadowrun/internal/pyenv"
	"github.com/meadowrun-go/meadowrun/internal/pyenv/pyenvtest"
	"github.com/meadowrun-go/meadowrun/local"
)

type name struct {
	Name string `json:"name"`
}

var greet = meadowrun.Named[name, []string]("pyenvbench_mod.greet")

// module is the Python function the runs call: it imports the
// environment's package, or answers without it.
const module = `def greet(arg):
    try:
        import mrgreet
        return [mrgreet.greet(arg["name"])]
    except ImportError:
        return ["hello, " + arg["name"]]
`

func main() { benchmain.Main("pyenvbench", run) }

func run(quick bool) error {
	runs, hits := 5, 200
	if quick {
		runs, hits = 2, 20
	}
	tmp, err := os.MkdirTemp("", "pyenvbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	wheels, err := pyenvtest.Wheelhouse(filepath.Join(tmp, "wheels"))
	if err != nil {
		return err
	}
	src := filepath.Join(tmp, "src")
	req := filepath.Join(tmp, "requirements.txt")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "pyenvbench_mod.py"), []byte(module), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(req, []byte("mrshout==1.0\nmrgreet==1.0\n"), 0o644); err != nil {
		return err
	}
	cache := filepath.Join(tmp, "cache")
	pip := meadowrun.PipOptions{NoIndex: true, FindLinks: []string{wheels}}
	vars := map[string]string{"PYTHONPATH": src}
	envDep := meadowrun.PipRequirementsFile(req, "").WithPipOptions(pip).WithEnv(vars)
	// The interpreter itself, as the virtualenv links to it (python3 in
	// PATH may be a wrapper, such as pyenv's shims, that starts slower).
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return fmt.Errorf("python3: %w", err)
	}
	base := strings.TrimSpace(string(out))
	plainDep := meadowrun.PreinstalledInterpreter(base, vars)

	// once runs the function on a fresh host: a worker starts.
	once := func(d meadowrun.Deployment) (time.Duration, error) {
		ctx := context.Background()
		h, err := local.NewHost(ctx, local.Options{CacheDir: cache})
		if err != nil {
			return 0, err
		}
		defer h.Close()
		t0 := time.Now()
		_, err = meadowrun.RunFunction(ctx, greet.With(name{"bench"}), h, &meadowrun.Options{Deployment: d, Output: io.Discard, LogDir: filepath.Join(tmp, "logs")})
		return time.Since(t0), err
	}
	cold, err := once(envDep)
	if err != nil {
		return fmt.Errorf("first run: %w", err)
	}
	var warm, plain []time.Duration
	for range runs {
		d, err := once(envDep)
		if err != nil {
			return err
		}
		warm = append(warm, d)
		if d, err = once(plainDep); err != nil {
			return err
		}
		plain = append(plain, d)
	}
	// A hit alone: what a fresh process spends on the environment.
	var hit []time.Duration
	for range hits {
		t0 := time.Now()
		e, err := pyenv.RequirementsFile(req, "")
		if err != nil {
			return err
		}
		e.Pip = pip
		b := &pyenv.Builder{Dir: filepath.Join(cache, "envs")}
		env, err := b.Ensure(context.Background(), e)
		if err != nil {
			return err
		}
		hit = append(hit, time.Since(t0))
		if !env.Hit {
			return fmt.Errorf("the environment was built again")
		}
	}
	fmt.Printf("PipRequirementsFile (mrshout, mrgreet from a local wheelhouse), local host, a fresh host per run:\n")
	fmt.Printf("  first run, the environment built:             %8.1f ms\n", ms(cold))
	fmt.Printf("  later runs, the same file (median of %d):     %8.1f ms\n", runs, ms(benchmain.Median(warm)))
	fmt.Printf("  PreinstalledInterpreter %s, the base (median of %d): %.1f ms\n", filepath.Base(base), runs, ms(benchmain.Median(plain)))
	fmt.Printf("  difference (environment's share of a run):    %8.1f ms\n", ms(benchmain.Median(warm))-ms(benchmain.Median(plain)))
	fmt.Printf("cache hit alone (resolve + find ready), %d runs: median %.3f ms, max %.3f ms (target: under 100 ms)\n",
		hits, ms(benchmain.Median(hit)), ms(slices.Max(hit)))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
