// Package container drives a machine's Docker engine through its HTTP API
// (never the docker command): it pulls images once per
// machine, with registry credentials when given, runs workers and sidecars
// in containers with their resource limits, and classifies what goes wrong
// (no engine, an image that does not exist, refused credentials, a port
// in use) into errors that say what to do.
package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
)

// Errors of the engine, classified so that callers can tell the user what
// to change.
var (
	// ErrNoEngine and the others are the driver's classes, so that
	// every host's container errors match alike.
	ErrNoEngine      = driver.ErrNoEngine
	ErrImageNotFound = driver.ErrImageNotFound
	ErrRegistryAuth  = driver.ErrRegistryAuth
	ErrPortInUse     = driver.ErrPortInUse
	ErrSidecarExited = driver.ErrSidecarExited
	// ErrCannotExec means the container's program cannot run in its image.
	ErrCannotExec = errors.New("program cannot run in the image")
)

// Labels every container meadowrun starts carries: Owner identifies the
// process that started it ("PID@BOOT"), so that containers of a process
// that died are removed by the next one.
const (
	LabelOwner = "meadowrun.owner"
	LabelRole  = "meadowrun.role"
)

// Auth are credentials for a registry. Their values are never logged.
type Auth struct {
	Username, Password string
}

// Options configure how the engine is reached.
type Options struct {
	// Host is the engine's address ("unix:///var/run/docker.sock",
	// "tcp://..."); "" means DOCKER_HOST, or the engine's default socket.
	Host string
}

// Engine is a Docker engine.
type Engine struct {
	cli  *apiClient
	host string

	mu    sync.Mutex
	pulls map[string]*pull // image → the pull in flight or done
	auths map[string]*Auth // image → the credentials it was ensured with (memory only)
}

type pull struct {
	done chan struct{}
	err  error
}

// Open connects to the engine and checks that it answers; otherwise the
// error wraps ErrNoEngine and says how to start one.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	cli, err := newAPIClient(opts.Host)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	e := &Engine{cli: cli, host: cli.host, pulls: map[string]*pull{}, auths: map[string]*Auth{}}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cli.ping(pctx); err != nil {
		cli.close()
		return nil, fmt.Errorf("%w at %s (%v): start the Docker engine (for example `sudo systemctl start docker`, "+
			"or `dockerd &` as root), or point DOCKER_HOST at one", ErrNoEngine, e.host, err)
	}
	e.sweep(ctx)
	return e, nil
}

// Host is the engine's address.
func (e *Engine) Host() string { return e.host }

// Version is the engine's version, for descriptions of the machine.
func (e *Engine) Version(ctx context.Context) (string, error) {
	var v struct {
		Version string `json:"Version"`
	}
	if err := e.cli.call(ctx, http.MethodGet, "/version", nil, nil, &v); err != nil {
		return "", err
	}
	return v.Version, nil
}

// Close releases the connection to the engine.
func (e *Engine) Close() error {
	e.cli.close()
	return nil
}

// Owner identifies this process among the engine's containers.
func Owner() string {
	return strconv.Itoa(os.Getpid()) + "@" + bootID()
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// sweep removes containers left by meadowrun processes of this machine
// that died without removing them (killed with SIGKILL, say).
func (e *Engine) sweep(ctx context.Context) {
	var list []apiListed
	q := url.Values{"all": {"1"}, "filters": {`{"label":{"` + LabelOwner + `":true}}`}}
	if err := e.cli.call(ctx, http.MethodGet, "/containers/json", q, nil, &list); err != nil {
		return
	}
	boot := bootID()
	for _, c := range list {
		pid, b, ok := strings.Cut(c.Labels[LabelOwner], "@")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || b != boot || processAlive(n) {
			continue
		}
		e.remove(ctx, c.ID)
	}
}

func processAlive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// Ensure makes image available on the machine: an image already there is
// used as it is (images are pulled once per machine); otherwise it is
// pulled, with auth when given. Concurrent calls for one image share one
// pull.
func (e *Engine) Ensure(ctx context.Context, ref string, auth *Auth) error {
	e.mu.Lock()
	e.auths[ref] = auth
	e.mu.Unlock()
	if e.hasImage(ctx, ref) == nil {
		return nil
	}
	e.mu.Lock()
	p := e.pulls[ref]
	// p.err may be read only once p.done is closed: its writer closes it
	// after writing.
	if p == nil || isDone(p.done) && p.err != nil {
		p = &pull{done: make(chan struct{})}
		e.pulls[ref] = p
		e.mu.Unlock()
		p.err = e.pull(ctx, ref, auth)
		close(p.done)
	} else {
		e.mu.Unlock()
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// pull pulls ref and reads the engine's progress stream to its end, where
// failures are reported.
func (e *Engine) pull(ctx context.Context, ref string, auth *Auth) error {
	h := http.Header{}
	if auth != nil {
		enc, err := registryAuth(auth, registryOf(ref))
		if err != nil {
			return err
		}
		h.Set("X-Registry-Auth", enc)
	}
	name, tag := imageRef(ref)
	resp, err := e.cli.do(ctx, http.MethodPost, "/images/create", url.Values{"fromImage": {name}, "tag": {tag}}, nil, h)
	if err != nil {
		return classifyPull(ref, auth, err.Error())
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("container: pulling %s: reading the engine's progress: %w", ref, err)
		}
		if m.Error != "" || m.ErrorDetail.Message != "" {
			msg := m.ErrorDetail.Message
			if msg == "" {
				msg = m.Error
			}
			return classifyPull(ref, auth, msg)
		}
	}
	// A pull that reported no error has the image; check, since some
	// engines report failures only by not having it.
	if err := e.hasImage(ctx, ref); err != nil {
		return fmt.Errorf("container: pulling %s: the engine reported success but has no such image: %w", ref, err)
	}
	return nil
}

// hasImage is nil when the engine has image ref.
func (e *Engine) hasImage(ctx context.Context, ref string) error {
	return e.cli.call(ctx, http.MethodGet, "/images/"+ref+"/json", nil, nil, nil)
}

// classifyPull turns an engine's pull failure into an error that says
// what to change.
func classifyPull(ref string, auth *Auth, msg string) error {
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "unauthorized") || strings.Contains(low, "authentication required") ||
		strings.Contains(low, "no basic auth credentials") || strings.Contains(low, "denied"):
		if auth == nil {
			return fmt.Errorf("%w: pulling %s: the registry needs credentials (%s): give the deployment a Secret with its username and password",
				ErrRegistryAuth, ref, msg)
		}
		return fmt.Errorf("%w: pulling %s as %q: %s: check the Secret's username and password", ErrRegistryAuth, ref, auth.Username, msg)
	case strings.Contains(low, "manifest unknown") || strings.Contains(low, "not found") ||
		strings.Contains(low, "does not exist") || strings.Contains(low, "name unknown"):
		what := "repository or tag"
		if strings.Contains(ref, "@") {
			what = "repository or digest"
		}
		return fmt.Errorf("%w: %s: the registry has no such %s (%s)", ErrImageNotFound, ref, what, msg)
	case strings.Contains(low, "invalid reference format") || strings.Contains(low, "invalid checksum digest"):
		return fmt.Errorf("%w: %s is not a valid image reference (%s)", ErrImageNotFound, ref, msg)
	}
	return fmt.Errorf("container: pulling %s: %s", ref, msg)
}

// registryOf returns the registry host of an image reference: its first
// path element when that looks like a host, else Docker Hub.
func registryOf(ref string) string {
	first, _, ok := strings.Cut(ref, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return "https://index.docker.io/v1/"
}

// Mount is a host path made visible in a container.
type Mount struct {
	Source, Target string
	ReadOnly       bool
}

// ParseMount parses "HOST_PATH:CONTAINER_PATH" or
// "HOST_PATH:CONTAINER_PATH:ro"; both paths must be absolute.
func ParseMount(s string) (Mount, error) {
	parts := strings.Split(s, ":")
	m := Mount{}
	switch {
	case len(parts) == 3 && parts[2] == "ro":
		m.ReadOnly = true
	case len(parts) == 3 && parts[2] == "rw", len(parts) == 2:
	default:
		return m, fmt.Errorf("container: mount %q: want HOST_PATH:CONTAINER_PATH, optionally with :ro", s)
	}
	m.Source, m.Target = parts[0], parts[1]
	if !strings.HasPrefix(m.Source, "/") || !strings.HasPrefix(m.Target, "/") {
		return m, fmt.Errorf("container: mount %q: both paths must be absolute", s)
	}
	return m, nil
}

// Spec says what container to run.
type Spec struct {
	// Role is "worker" or "sidecar", for labels and messages.
	Role string
	// Image is the image reference.
	Image string
	// Entrypoint and Cmd replace the image's when set.
	Entrypoint, Cmd []string
	// WorkingDir replaces the image's when set.
	WorkingDir string
	// Env are KEY=VALUE pairs added to the image's environment.
	Env []string
	// Mounts are bind mounts.
	Mounts []Mount
	// MemoryBytes limits memory (no swap beyond it); 0 means no limit.
	MemoryBytes int64
	// NanoCPUs limits CPU time, in billionths of a CPU; 0 means none.
	NanoCPUs int64
	// GPUs are the device IDs of the GPUs the container gets.
	GPUs []string
	// Ports are published on the same host ports: "N" or "N-M" (TCP).
	Ports []string
	// Network is the network mode: "" for the engine's default, "host",
	// "none", or "container:ID" to share another container's network.
	Network string
	// ExtraHosts are "name:address" lines added to its /etc/hosts.
	ExtraHosts []string
	// Init runs a minimal init as PID 1 that reaps orphans and forwards
	// signals.
	Init bool
}

// Container is a started container.
type Container struct {
	e    *Engine
	ID   string
	spec Spec
}

// Run creates and starts a container.
func (e *Engine) Run(ctx context.Context, s Spec) (*Container, error) {
	cfg := &apiContainerConfig{Image: s.Image, Entrypoint: s.Entrypoint, Cmd: s.Cmd, WorkingDir: s.WorkingDir,
		Env: s.Env, Labels: map[string]string{LabelOwner: Owner(), LabelRole: s.Role}}
	hc := &cfg.HostConfig
	hc.NetworkMode, hc.ExtraHosts = s.Network, s.ExtraHosts
	if s.Init {
		t := true
		hc.Init = &t
	}
	for _, m := range s.Mounts {
		hc.Mounts = append(hc.Mounts, apiMount{Type: "bind", Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	if s.MemoryBytes > 0 {
		hc.Memory = s.MemoryBytes
		hc.MemorySwap = s.MemoryBytes
	}
	hc.NanoCPUs = s.NanoCPUs
	if len(s.GPUs) > 0 {
		hc.DeviceRequests = []apiDeviceRequest{{Driver: "nvidia", DeviceIDs: s.GPUs, Capabilities: [][]string{{"gpu"}}}}
	}
	if len(s.Ports) > 0 {
		exposed, bindings, err := portMap(s.Ports)
		if err != nil {
			return nil, err
		}
		cfg.ExposedPorts = exposed
		hc.PortBindings = bindings
	}
	var created struct {
		ID string `json:"Id"`
	}
	err := e.cli.call(ctx, http.MethodPost, "/containers/create", nil, cfg, &created)
	if isNotFound(err) {
		// The image went since Ensure (removed by another program, or
		// its tag moving in a concurrent pull): pulled again, once.
		e.mu.Lock()
		auth := e.auths[s.Image]
		e.mu.Unlock()
		if perr := e.pull(ctx, s.Image, auth); perr == nil {
			err = e.cli.call(ctx, http.MethodPost, "/containers/create", nil, cfg, &created)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("container: creating a %s container of %s: %w", s.Role, s.Image, err)
	}
	c := &Container{e: e, ID: created.ID, spec: s}
	if err := e.cli.call(ctx, http.MethodPost, "/containers/"+created.ID+"/start", nil, nil, nil); err != nil {
		c.Remove()
		return nil, classifyStart(s, err)
	}
	return c, nil
}

// classifyStart explains why a created container did not start.
func classifyStart(s Spec, err error) error {
	msg := err.Error()
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "address already in use") || strings.Contains(low, "port is already allocated"):
		return fmt.Errorf("%w: a %s container of %s could not publish its ports %s: %s: choose other ports or stop what holds them",
			ErrPortInUse, s.Role, s.Image, strings.Join(s.Ports, ","), msg)
	case strings.Contains(low, "no such file or directory") || strings.Contains(low, "exec format error") ||
		strings.Contains(low, "executable file not found"):
		return fmt.Errorf("%w: %s: %s", ErrCannotExec, s.Image, msg)
	case strings.Contains(low, "could not select device driver") && len(s.GPUs) > 0:
		return fmt.Errorf("container: the engine cannot give GPUs to containers (install the NVIDIA Container Toolkit): %s", msg)
	}
	return fmt.Errorf("container: starting a %s container of %s: %w", s.Role, s.Image, err)
}

// portMap turns "N" and "N-M" into published TCP ports on the same host
// ports, on every address.
func portMap(ports []string) (map[string]struct{}, map[string][]apiPortBinding, error) {
	set, bindings := map[string]struct{}{}, map[string][]apiPortBinding{}
	for _, p := range ports {
		lo, hi, err := PortRange(p)
		if err != nil {
			return nil, nil, err
		}
		for n := lo; n <= hi; n++ {
			port := strconv.Itoa(n) + "/tcp"
			set[port] = struct{}{}
			bindings[port] = []apiPortBinding{{HostPort: strconv.Itoa(n)}}
		}
	}
	return set, bindings, nil
}

// PortRange parses "N" or "N-M".
func PortRange(p string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(p, "-")
	lo, err1 := strconv.Atoi(a)
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(b)
	}
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("container: invalid port %q: want a port number or a range like 8080-8089", p)
	}
	return lo, hi, nil
}

// CheckPortsFree fails with ErrPortInUse, naming the port, when a port of
// ports cannot be listened on here now.
func CheckPortsFree(ports []string, machine string) error {
	for _, p := range ports {
		lo, hi, err := PortRange(p)
		if err != nil {
			return err
		}
		for n := lo; n <= hi; n++ {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(n))
			if err != nil {
				return fmt.Errorf("%w: port %d on %s is taken by another program (%v): choose another port or stop that program",
					ErrPortInUse, n, machine, err)
			}
			l.Close()
		}
	}
	return nil
}

// Exit is how a container ended.
type Exit struct {
	Code      int
	OOMKilled bool
	// Gone is true when the container disappeared (removed by someone
	// else) and nothing more is known.
	Gone bool
}

// Wait blocks until the container stops and reports how it ended.
func (c *Container) Wait(ctx context.Context) Exit {
	// The wait's own answer is not needed: the inspection after it
	// says how the container ended, and whether it is gone.
	c.e.cli.call(ctx, http.MethodPost, "/containers/"+c.ID+"/wait", url.Values{"condition": {"not-running"}}, nil, nil)
	info, err := c.inspect(context.WithoutCancel(ctx))
	if err != nil || info.State == nil {
		return Exit{Code: -1, Gone: isNotFound(err)}
	}
	return Exit{Code: info.State.ExitCode, OOMKilled: info.State.OOMKilled}
}

// OOMKilled asks the engine again whether the container was killed for
// its memory: the engine learns it from an event that can come after the
// container's exit.
func (c *Container) OOMKilled(ctx context.Context) bool {
	info, err := c.inspect(ctx)
	return err == nil && info.State != nil && info.State.OOMKilled
}

func (c *Container) inspect(ctx context.Context) (apiInspect, error) {
	var info apiInspect
	err := c.e.cli.call(ctx, http.MethodGet, "/containers/"+c.ID+"/json", nil, nil, &info)
	return info, err
}

// Running reports whether the container runs now.
func (c *Container) Running(ctx context.Context) bool {
	info, err := c.inspect(ctx)
	return err == nil && info.State != nil && info.State.Running
}

// Logs returns the last max bytes of what the container wrote to its
// stdout and stderr.
func (c *Container) Logs(ctx context.Context, max int) []byte {
	resp, err := c.e.cli.do(ctx, http.MethodGet, "/containers/"+c.ID+"/logs",
		url.Values{"stdout": {"1"}, "stderr": {"1"}, "tail": {"200"}}, nil, nil)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out, _ := demux(resp.Body)
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

// demux joins the stdout and stderr frames of a non-TTY log stream.
func demux(r io.Reader) ([]byte, error) {
	var out []byte
	hdr := make([]byte, 8)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
		n := int(hdr[4])<<24 | int(hdr[5])<<16 | int(hdr[6])<<8 | int(hdr[7])
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return out, err
		}
		out = append(out, buf...)
	}
}

// Kill stops the container at once.
func (c *Container) Kill() error {
	err := c.e.cli.call(context.Background(), http.MethodPost, "/containers/"+c.ID+"/kill", url.Values{"signal": {"KILL"}}, nil, nil)
	if err != nil && !isNotFound(err) && !isConflict(err) {
		return fmt.Errorf("container: killing %s: %w", c.ID[:12], err)
	}
	return nil
}

// Remove removes the container, killing it if it still runs.
func (c *Container) Remove() error {
	if err := c.e.remove(context.Background(), c.ID); err != nil {
		return fmt.Errorf("container: removing %s: %w", c.ID[:12], err)
	}
	return nil
}

// remove removes container id, killing it if it still runs; one already
// gone is not an error.
func (e *Engine) remove(ctx context.Context, id string) error {
	err := e.cli.call(ctx, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}}, nil, nil)
	if isNotFound(err) {
		return nil
	}
	return err
}
