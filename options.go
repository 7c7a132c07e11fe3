package meadowrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/meadowrun-go/meadowrun/driver"
)

// ErrUnsupported is wrapped when a host cannot honour an option (sidecar
// containers, ports, a deployment kind, a memory limit). Options are never
// silently ignored. It is driver.ErrUnsupported, so errors of drivers and
// of this package match it alike.
var ErrUnsupported = driver.ErrUnsupported

// ErrInvalidOptions is wrapped by errors about options that cannot work
// anywhere (a deployment glob that matches nothing, for example).
var ErrInvalidOptions = errors.New("meadowrun: invalid options")

// Options configure RunFunction, RunCommand and their Start variants. The
// zero value is valid: one logical CPU, the local code (mirror_local),
// output streamed to stderr.
type Options struct {
	// Resources needed by the job. Nil means the zero Resources.
	Resources *Resources
	// Deployment says what code and environment the job runs with. The
	// zero value mirrors the local program (the reference's mirror_local).
	Deployment Deployment
	// Sidecars are containers started next to each of the job's workers,
	// sharing its network (see Container). They need a container
	// deployment on the local and SSH hosts.
	Sidecars []Container
	// Ports to open on the machine for the duration of the job, e.g.
	// "8000" or "8080-8089".
	Ports []string
	// Output receives the job's stdout and stderr, live, each line
	// prefixed with its task or worker. Nil means os.Stderr; use io.Discard
	// to drop it (the job's log file still keeps everything).
	Output io.Writer
	// LogDir is where the job's log file goes. "" means the user's state
	// directory ($XDG_STATE_HOME/meadowrun/logs, ~/.local/state/...).
	LogDir string
}

// CommandOptions configure RunCommand.
type CommandOptions struct {
	Options
	// ContextVariables are given to the command as JSON in the
	// MEADOWRUN_CONTEXT_VARIABLES environment variable; a Go command reads
	// them with ContextVariables.
	ContextVariables map[string]any
	// Env adds environment variables to the command.
	Env map[string]string
	// Dir is the command's working directory. "" means the worker's.
	Dir string
}

// MapOptions configure RunMap and RunMapAsCompleted.
type MapOptions struct {
	Options
	// Resources (in Options) apply to each task.

	// Concurrency is the number of tasks that run at once, each in its own
	// worker. 0 means len(args)/2+1 as in the reference (the number of
	// workers that fit, for an iterator of unknown length); it is always
	// capped by what fits on the host.
	Concurrency int
	// MaxAttempts is how many times a failing task is tried in all. 0 means
	// 1: no retry.
	MaxAttempts int
	// RetryWithMoreMemory gives attempt n of a task n times the requested
	// memory, when the previous attempt was killed for exceeding its memory
	// or its peak reached 95% of the limit. It needs MemoryGB and
	// MaxAttempts > 1.
	RetryWithMoreMemory bool
}

// validate refuses map options that cannot work, rather than ignoring
// them.
func (o *MapOptions) validate() error {
	switch {
	case o.Concurrency < 0:
		return fmt.Errorf("%w: MapOptions.Concurrency is %d; it must be 0 (default) or more", ErrInvalidOptions, o.Concurrency)
	case o.MaxAttempts < 0:
		return fmt.Errorf("%w: MapOptions.MaxAttempts is %d; it must be 0 (default) or more", ErrInvalidOptions, o.MaxAttempts)
	case o.RetryWithMoreMemory && (o.Resources == nil || o.Resources.MemoryGB == 0):
		return fmt.Errorf("%w: RetryWithMoreMemory multiplies the memory requested per task, but Resources.MemoryGB is not set", ErrInvalidOptions)
	case o.RetryWithMoreMemory && o.MaxAttempts < 2:
		return fmt.Errorf("%w: RetryWithMoreMemory needs MaxAttempts of 2 or more, or no attempt can get more memory", ErrInvalidOptions)
	}
	return nil
}

// Deployment says what code and environment a job runs with. The zero
// value is MirrorLocal: the caller's own binary.
type Deployment struct {
	kind        string // "" = mirror local
	image       string
	digest      string
	repoURL     string
	branch      string
	commit      string
	interpreter string
	creds       Secret
	globs       []string
	env         map[string]string
	// Environment deployments (pythonenv.go): where the specification
	// comes from, the Python version asked for, pip's options, and the
	// specification once resolved (a detached job's supervisor gets it
	// so).
	envSource, envPath, python string
	pip                        PipOptions
	pipSet                     bool
	resolved                   *driver.Environment
}

// MirrorLocal runs the caller's own program (its binary re-executed in
// worker mode), with the files matching globs and the given environment
// variables. On this machine the files are already there; remote hosts
// copy them, content-addressed.
func MirrorLocal(globs []string, env map[string]string) Deployment {
	return Deployment{globs: slices.Clone(globs), env: maps.Clone(env)}
}

// ContainerImage runs in the container image "repository:tag" ("latest"
// when tag is empty), pulled with the credentials of creds when it is not
// the zero Secret, with env added to the image's environment. A Go
// function or a command runs in the image with this program mounted in
// read-only (so the image needs no meadowrun, but a program built with
// cgo needs the image to have its C library: build with CGO_ENABLED=0 to
// run in any image). Resources become the container's limits. Images are
// pulled once per machine and kept.
func ContainerImage(repository, tag string, creds Secret, env map[string]string) Deployment {
	if tag == "" {
		tag = "latest"
	}
	return Deployment{kind: "container", image: repository + ":" + tag, creds: creds, env: maps.Clone(env)}
}

// ContainerImageAtDigest is ContainerImage at a digest ("sha256:..."):
// the exact image, whatever its tags name now.
func ContainerImageAtDigest(repository, digest string, creds Secret, env map[string]string) Deployment {
	return Deployment{kind: "container", image: repository, digest: digest, creds: creds, env: maps.Clone(env)}
}

// ContainerInterpreter runs Python functions (see Named) and commands on
// meadowrun's Python worker, run by the python3 of the container image
// "repository:tag" (the reference's ContainerInterpreter). Add the
// caller's code with WithGlobs: it is then importable from the worker's
// directory, as with PreinstalledInterpreter.
func ContainerInterpreter(repository, tag string, creds Secret) Deployment {
	d := ContainerImage(repository, tag, creds, nil)
	d.interpreter = "python3"
	return d
}

// ContainerInterpreterAtDigest is ContainerInterpreter in the image at a
// digest ("sha256:..."): the exact image, whatever its tags name now (the
// reference's ContainerAtDigestInterpreter).
func ContainerInterpreterAtDigest(repository, digest string, creds Secret) Deployment {
	d := ContainerImageAtDigest(repository, digest, creds, nil)
	d.interpreter = "python3"
	return d
}

// GitRepo runs code from a git repository at a branch or commit.
func GitRepo(repoURL, branch, commit string, env map[string]string) Deployment {
	return Deployment{kind: "git", repoURL: repoURL, branch: branch, commit: commit, env: maps.Clone(env)}
}

// PreinstalledInterpreter runs with a Python interpreter already
// installed on the machine, at path ("" means python3 from PATH), with
// env added to the workers' environment (PYTHONPATH, for one). Functions
// named "package.module.function" (see Named) then run on meadowrun's
// Python worker, imported from the caller's working directory, and
// commands run from that worker.
func PreinstalledInterpreter(path string, env map[string]string) Deployment {
	return Deployment{kind: "interpreter", interpreter: path, env: maps.Clone(env)}
}

// WithGlobs returns d bringing, besides what it has, the files matching
// globs (relative to the working directory, a directory bringing
// everything under it, as MirrorLocal's): on this machine they are already
// there; remote hosts copy them, content-addressed, into the worker's
// working directory, keeping their paths. With PreinstalledInterpreter it
// is the reference's mirror_local(interpreter=PreinstalledInterpreter(...),
// globs=...): the Python worker imports "package.module" from that
// directory, so the Python code travels to SSH machines with it.
func (d Deployment) WithGlobs(globs ...string) Deployment {
	d.globs = append(slices.Clone(d.globs), globs...)
	d.env = maps.Clone(d.env)
	return d
}

// Kind names the deployment: "mirror_local", "container", "git",
// "interpreter" (PreinstalledInterpreter) or "environment" (a Python
// environment meadowrun builds: LocalPipInterpreter, PipRequirementsFile,
// PoetryProjectPath, LocalCondaInterpreter, CondaEnvironmentFile).
func (d Deployment) Kind() string {
	if d.kind == "" {
		return "mirror_local"
	}
	return d.kind
}

// files expands the globs of a deployment (MirrorLocal, WithGlobs),
// relative to the working directory; a directory brings everything under
// it. A glob that matches nothing is an error: it is most likely a typo.
func (d Deployment) files() ([]string, error) {
	if len(d.globs) == 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, g := range d.globs {
		if filepath.IsAbs(g) || !filepath.IsLocal(filepath.Clean(strings.TrimPrefix(g, "./"))) {
			return nil, fmt.Errorf("%w: deployment glob %q: globs name files under the working directory", ErrInvalidOptions, g)
		}
		ms, err := filepath.Glob(g)
		if err != nil {
			return nil, fmt.Errorf("%w: deployment glob %q: %w", ErrInvalidOptions, g, err)
		}
		if len(ms) == 0 {
			return nil, fmt.Errorf("%w: deployment glob %q matches no file", ErrInvalidOptions, g)
		}
		for _, m := range ms {
			err := filepath.WalkDir(m, func(p string, e fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if e.Type().IsRegular() {
					add(filepath.Clean(p))
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("meadowrun: deployment glob %q: %w", g, err)
			}
		}
	}
	return out, nil
}

// driver returns the deployment as drivers see it.
func (d Deployment) driver() driver.Deployment {
	dd := driver.Deployment{Kind: driver.DeploymentKind(d.Kind()), Repo: d.repoURL, Branch: d.branch, Commit: d.commit, Interpreter: d.interpreter}
	if d.kind == "container" {
		dd.Image = d.image
		if d.digest != "" {
			dd.Image = d.image + "@" + d.digest
		}
	}
	return dd
}

// runtime is the worker runtime the deployment needs: interpreters are
// Python's, everything else runs this program's Go worker.
func (d Deployment) runtime() driver.Runtime {
	if d.kind == "interpreter" || d.kind == "environment" || d.kind == "container" && d.interpreter != "" {
		return driver.RuntimePython
	}
	return driver.RuntimeGo
}

// key identifies the deployment in warm-worker pool keys.
func (d Deployment) key() string {
	if d.plain() {
		// The default deployment of every warm call: its key is formatted
		// once, not per call.
		return plainKey()
	}
	return d.formatKey()
}

// plain reports whether d is the zero Deployment (mirror local, nothing
// added).
func (d Deployment) plain() bool {
	return d.kind == "" && d.image == "" && d.digest == "" && d.repoURL == "" && d.branch == "" && d.commit == "" &&
		d.interpreter == "" && d.creds == (Secret{}) && d.globs == nil && d.env == nil
}

// plainKey is the key of the zero Deployment.
var plainKey = sync.OnceValue(func() string { return Deployment{}.formatKey() })

func (d Deployment) formatKey() string {
	var b strings.Builder
	b.WriteString(d.Kind())
	for _, k := range slices.Sorted(maps.Keys(d.env)) {
		fmt.Fprintf(&b, "|%s=%s", k, d.env[k])
	}
	fmt.Fprintf(&b, "|%s|%s|%s|%s|%s|%s|%v|%s", d.image, d.digest, d.repoURL, d.branch, d.commit, d.interpreter, d.globs, d.creds)
	if d.kind == "environment" {
		// The pool key of a job adds the resolved specification's hash.
		fmt.Fprintf(&b, "|%s|%s|%s|%v", d.envSource, d.envPath, d.python, d.pip)
	}
	return b.String()
}

// poolKey identifies the workers o's jobs can share: same deployment,
// same sidecars, same ports.
func (o *Options) poolKey() string {
	k := o.Deployment.key()
	if len(o.Sidecars) == 0 && len(o.Ports) == 0 {
		return k
	}
	b, _ := json.Marshal(struct {
		S []Container
		P []string
	}{o.Sidecars, o.Ports})
	return k + "|" + string(b)
}

// Container is a container image used as a sidecar: Repository with a
// Tag ("latest" when both are empty) or a Digest. A sidecar starts before
// the job's worker and stops after it, and shares its network: the worker
// reaches it on localhost, as "meadowrun-sidecar-N" (N its index in
// Options.Sidecars), and as Name when one is given.
type Container struct {
	Repository string
	Tag        string
	Digest     string
	// Name is a host name the worker reaches the sidecar by.
	Name string `json:",omitempty"`
	// Env are the sidecar's environment variables, Args replace its
	// image's command.
	Env  map[string]string `json:",omitempty"`
	Args []string          `json:",omitempty"`
	// Credentials log in to its registry.
	Credentials Secret `json:",omitzero"`
}

// image returns the container's image as drivers name it.
func (c Container) image() string {
	switch {
	case c.Digest != "":
		return c.Repository + "@" + c.Digest
	case c.Tag != "":
		return c.Repository + ":" + c.Tag
	}
	return c.Repository + ":latest"
}

// credentials reads the secrets of the deployment and of the sidecars.
func (o *Options) credentials(ctx context.Context) (*driver.Credentials, []*driver.Credentials, error) {
	dc, err := o.Deployment.creds.resolve(ctx)
	if err != nil {
		return nil, nil, err
	}
	var sc []*driver.Credentials
	for i, c := range o.Sidecars {
		cr, err := c.Credentials.resolve(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("sidecar %d: %w", i, err)
		}
		sc = append(sc, cr)
	}
	return dc, sc, nil
}

// sidecars returns o's sidecars as drivers see them, with their
// credentials.
func (o *Options) sidecars(creds []*driver.Credentials) []driver.Container {
	var out []driver.Container
	for i, c := range o.Sidecars {
		dc := driver.Container{Name: c.Name, Image: c.image(), Env: maps.Clone(c.Env), Args: slices.Clone(c.Args)}
		if i < len(creds) {
			dc.Credentials = creds[i]
		}
		out = append(out, dc)
	}
	return out
}

// validatePorts checks port specifications: "N" or "N-M" with 1 ≤ N ≤ M ≤ 65535.
func validatePorts(ports []string) error {
	for _, p := range ports {
		if _, _, ok := driver.PortRange(p); !ok {
			return fmt.Errorf("meadowrun: invalid port %q: want a port number or a range like 8080-8089", p)
		}
	}
	return nil
}

// validate checks everything that does not depend on the host.
func (o *Options) validate() error {
	if o.Resources != nil {
		if err := o.Resources.Validate(); err != nil {
			return err
		}
	}
	if err := validatePorts(o.Ports); err != nil {
		return err
	}
	for i, c := range o.Sidecars {
		if c.Repository == "" {
			return fmt.Errorf("meadowrun: sidecar %d has no image repository", i)
		}
	}
	return nil
}

func (o *Options) resources() Resources {
	if o.Resources == nil {
		return Resources{}
	}
	return *o.Resources
}
