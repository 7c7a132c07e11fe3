package meadowrun

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/pyenv"
)

// Python deployments whose environment meadowrun builds: the
// reference's LocalPipInterpreter, PipRequirementsFile, PoetryProjectPath,
// LocalCondaInterpreter and CondaEnvironmentFile. Each is resolved when
// the job is submitted (the file read, the local environment frozen or
// exported) into one specification, and every machine the job runs on
// builds that environment itself, once: environments are kept per
// machine by content (specification, Python version, pip options), so a
// second job with the same requirements starts at once. Python functions
// (see Named) and commands then run on meadowrun's Python worker with the
// environment's interpreter; add the caller's code with WithGlobs.

// PipOptions are the package index options given to pip when it builds a
// pip environment (see Deployment.WithPipOptions): IndexURL
// (--index-url), ExtraIndexURLs (--extra-index-url), FindLinks
// (--find-links, directories as the worker's machine sees them) and
// NoIndex (--no-index). The zero value uses pip's configuration on the
// machine.
type PipOptions = driver.PipOptions

// The sources of environment deployments.
const (
	envPipLocal   = "LocalPipInterpreter"
	envPipFile    = "PipRequirementsFile"
	envPoetry     = "PoetryProjectPath"
	envCondaLocal = "LocalCondaInterpreter"
	envCondaFile  = "CondaEnvironmentFile"
)

// LocalPipInterpreter re-creates on the worker's machine the virtualenv
// (or any interpreter with pip) of this machine whose interpreter is at
// path, e.g. "/home/me/venv/bin/python": its packages, as
// `pip freeze --exclude-editable` lists them when the job is submitted,
// are installed by pip into a virtualenv of the machine's Python of the
// same minor version (python3.X or python3). Editable installs are left
// out: bring their code with WithGlobs.
func LocalPipInterpreter(path string) Deployment {
	return Deployment{kind: "environment", envSource: envPipLocal, envPath: path}
}

// PipRequirementsFile builds a virtualenv of the machine's Python of
// version pythonVersion ("3.11" or "3.11.2"; "" means the machine's
// python3, whatever its version) with the requirements file at path (as
// `pip freeze` writes it) installed by pip.
func PipRequirementsFile(path, pythonVersion string) Deployment {
	return Deployment{kind: "environment", envSource: envPipFile, envPath: path, python: pythonVersion}
}

// PoetryProjectPath builds a virtualenv of the machine's Python of
// version pythonVersion ("" means python3) with the packages of the
// poetry project in directory path, as its poetry.lock pins them: what
// `poetry install --no-root` installs, translated to pinned requirements
// and installed by pip, so that no machine needs poetry. The project
// itself is not installed: bring its code with WithGlobs.
func PoetryProjectPath(path, pythonVersion string) Deployment {
	return Deployment{kind: "environment", envSource: envPoetry, envPath: path, python: pythonVersion}
}

// LocalCondaInterpreter re-creates on the worker's machine the conda
// environment of this machine named nameOrPath (a name, or the path of
// its prefix): `conda env export` here when the job is submitted, then
// `conda env create --prefix` on the machine. Both machines need conda.
func LocalCondaInterpreter(nameOrPath string) Deployment {
	return Deployment{kind: "environment", envSource: envCondaLocal, envPath: nameOrPath}
}

// CondaEnvironmentFile creates on the worker's machine the conda
// environment of the file at path: an environment.yml as `conda env
// export` writes it (created with `conda env create --prefix ... --file`),
// or the output of `conda list --explicit` (created with `conda create
// --prefix ... --file`); the format is detected. Its name: and prefix:
// lines are ignored. The machine needs conda.
func CondaEnvironmentFile(path string) Deployment {
	return Deployment{kind: "environment", envSource: envCondaFile, envPath: path}
}

// WithPipOptions returns d, a pip environment (LocalPipInterpreter,
// PipRequirementsFile, PoetryProjectPath), with the package index
// options o given to pip on every machine.
func (d Deployment) WithPipOptions(o PipOptions) Deployment {
	d.pip = o
	d.pipSet = true
	d.env = maps.Clone(d.env)
	return d
}

// WithEnv returns d with the environment variables of env added to its
// workers' (for PYTHONPATH, for one).
func (d Deployment) WithEnv(env map[string]string) Deployment {
	merged := maps.Clone(d.env)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, env)
	d.env = merged
	return d
}

// environment resolves an environment deployment to the specification
// every machine builds: nil for other deployments.
func (d Deployment) environment(ctx context.Context) (*driver.Environment, error) {
	if d.kind != "environment" {
		return nil, nil
	}
	if d.resolved != nil {
		return d.resolved, nil
	}
	var e *driver.Environment
	var err error
	switch d.envSource {
	case envPipLocal:
		e, err = pyenv.Freeze(ctx, d.envPath)
	case envPipFile:
		e, err = pyenv.RequirementsFile(d.envPath, d.python)
	case envPoetry:
		e, err = pyenv.PoetryProject(d.envPath, d.python)
	case envCondaLocal:
		e, err = pyenv.CondaExport(ctx, "", d.envPath)
	case envCondaFile:
		e, err = pyenv.CondaFile(d.envPath, "")
	default:
		err = fmt.Errorf("unknown environment source %q", d.envSource)
	}
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			return nil, fmt.Errorf("meadowrun: %s(%q): %w", d.envSource, d.envPath, err)
		}
		return nil, fmt.Errorf("%w: %s(%q): %w", ErrInvalidOptions, d.envSource, d.envPath, err)
	}
	if d.pipSet {
		if e.Manager != driver.ManagerPip {
			return nil, fmt.Errorf("%w: %s: pip options apply to pip environments (LocalPipInterpreter, PipRequirementsFile, PoetryProjectPath); "+
				"a conda environment file lists its index in its channels and its pip section", ErrInvalidOptions, d.envSource)
		}
		e.Pip = d.pip
	}
	return e, nil
}
