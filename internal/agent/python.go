package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
)

// Python workers: the local driver runs meadowrun's Python worker with the
// deployment's interpreter, its script written to the agent's directory.
// The agent says in its hello which python3 its PATH has, and refuses a
// Python worker whose interpreter the machine lacks before starting it.

// pythonWait bounds how long a hello waits for the python3 probe that the
// agent starts when it starts.
const pythonWait = 3 * time.Second

// probePython returns the version of the python3 in PATH ("3.11.2"), ""
// when there is none or it does not answer.
func probePython(ctx context.Context) string {
	path, err := exec.LookPath("python3")
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Python 3 prints "Python 3.11.2" on stdout, versions before 3.4 on
	// stderr.
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return ""
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "Python ")
	if !ok || strings.ContainsAny(v, " \n") {
		return ""
	}
	return v
}

// python is the machine's python3 version once the probe has answered,
// or "" if it has not within pythonWait.
func (a *agent) python() string {
	select {
	case <-a.pythonDone:
	case <-time.After(pythonWait):
		return ""
	}
	return a.pythonVersion
}

// checkInterpreter refuses, wrapping driver.ErrUnsupported, a Python
// worker whose interpreter is not on the machine. A relative path with a
// slash is the worker's, from its working directory dir.
func (a *agent) checkInterpreter(spec driver.WorkerSpec, dir string) error {
	if spec.Runtime != driver.RuntimePython || spec.Deployment.Kind == driver.DeployContainer || spec.Deployment.Kind == driver.DeployEnvironment {
		// A container's interpreter is in its image; an environment's
		// is found (for the version it needs) when it is built.
		return nil
	}
	interp := spec.Deployment.Interpreter
	if interp == "" {
		interp = "python3"
	}
	look := interp
	if strings.Contains(interp, "/") && !filepath.IsAbs(interp) && dir != "" {
		look = filepath.Join(dir, interp)
	}
	if _, err := exec.LookPath(look); err != nil {
		where := "there"
		if !strings.Contains(interp, "/") {
			where = fmt.Sprintf("in the agent's PATH (%s)", os.Getenv("PATH"))
		}
		return fmt.Errorf("agent: a Python worker is %w: machine %s has no Python interpreter %q %s (%v); install it on the machine, or give PreinstalledInterpreter (--interpreter) the path of one it has (meadowrun hosts shows each machine's python3)",
			driver.ErrUnsupported, a.info.Name, interp, where, err)
	}
	return nil
}
