package meadowrun_test

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/containertest"
	"github.com/meadowrun-go/meadowrun/local"
)

// The container tests run against the real Docker engine and registry of
// scripts/containers.sh (docs/testing-containers.md).

// ctrDial connects to addr from inside the job's container and returns
// the first line it reads: how the tests see what a sidecar serves.
var ctrDial = meadowrun.Register("ctr-dial", func(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			defer c.Close()
			return bufio.NewReader(c).ReadString('\n')
		}
		if time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(50 * time.Millisecond)
	}
})

// ctrHostname returns the worker's host name (a container's is its ID).
var ctrHostname = meadowrun.Register("ctr-hostname", func(ctx context.Context, _ int) (string, error) {
	return os.Hostname()
})

// repoTag splits "registry/repo:tag".
func repoTag(t *testing.T, image string) (string, string) {
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		t.Fatalf("image %q has no tag", image)
	}
	return image[:i], image[i+1:]
}

// repoDigest splits "registry/repo@sha256:...".
func repoDigest(t *testing.T, image string) (string, string) {
	repo, digest, ok := strings.Cut(image, "@")
	if !ok {
		t.Fatalf("image %q has no digest", image)
	}
	return repo, digest
}

// ctrHost is a local host whose container deployments run on the test
// engine, with the registry's credentials in the environment.
func ctrHost(t *testing.T, env containertest.Env, opts local.Options) *meadowrun.Host {
	t.Helper()
	t.Setenv("MR_TEST_REGISTRY_USER", env.RegistryUser)
	t.Setenv("MR_TEST_REGISTRY_PASSWORD", env.RegistryPassword)
	opts.DockerHost = env.DockerHost
	h, err := local.NewHost(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func ctrSecret() meadowrun.Secret {
	return meadowrun.SecretFromEnv("MR_TEST_REGISTRY_USER", "MR_TEST_REGISTRY_PASSWORD")
}

// debian is the test image with a shell and Python, pulled with the
// registry's credentials.
func debian(t *testing.T, env containertest.Env) meadowrun.Deployment {
	repo, tag := repoTag(t, env.DebianImage)
	return meadowrun.ContainerImage(repo, tag, ctrSecret(), map[string]string{"MR_DEPLOY": "container"})
}

func TestConformanceContainer(t *testing.T) {
	env := containertest.Require(t)
	var h *meadowrun.Host
	hosttest.Run(t, hosttest.Config{
		NewHost: func(t *testing.T) *meadowrun.Host {
			// Some tests leave marks in their temporary directories
			// that the workers read and write.
			h = ctrHost(t, env, local.Options{ContainerMounts: []string{os.TempDir() + ":" + os.TempDir()}})
			return h
		},
		MillionTasks: millionTasks / 10,
		Deployment:   debian(t, env),
	})
}

// TestConformanceContainerPython runs the suite's functions on the
// image's python3 (ContainerInterpreter).
func TestConformanceContainerPython(t *testing.T) {
	env := containertest.Require(t)
	repo, tag := repoTag(t, env.DebianImage)
	hosttest.Run(t, hosttest.Config{
		NewHost: func(t *testing.T) *meadowrun.Host {
			return ctrHost(t, env, local.Options{ContainerMounts: []string{os.TempDir() + ":" + os.TempDir()}})
		},
		MillionTasks: millionTasks / 10,
		Deployment:   meadowrun.ContainerInterpreter(repo, tag, ctrSecret()),
		Python:       true,
	})
}

// A Go function runs inside the image: its host name is the container's,
// and the deployment's environment is there.
func TestContainerRunsInsideTheImage(t *testing.T) {
	env := containertest.Require(t)
	h := ctrHost(t, env, local.Options{})
	o := meadowrun.Options{Deployment: debian(t, env), LogDir: t.TempDir(), Output: &hosttest.SyncBuffer{}}
	name, err := meadowrun.RunFunction(t.Context(), ctrHostname.With(0), h, &o)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Hostname()
	if name == self || len(name) != 12 {
		t.Fatalf("host name in the container = %q, want a container ID (not this machine's %q)", name, self)
	}
	out := &hosttest.SyncBuffer{}
	o.Output = out
	if _, err := meadowrun.RunCommand(t.Context(), []string{"sh", "-c", "cat /etc/debian_version; echo deploy=$MR_DEPLOY"}, h,
		&meadowrun.CommandOptions{Options: o}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "deploy=container") || !strings.Contains(out.String(), "12.") {
		t.Fatalf("command output %q: want Debian 12's version and the deployment's variable", out)
	}
}

// staticWorker builds testdata/containers/worker without cgo: a program
// that runs in any image.
func staticWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "worker")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/containers/worker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the static worker: %v\n%s", err, out)
	}
	return bin
}

// In an image with nothing but one program (FROM scratch), a static
// meadowrun program serves functions and runs the image's program, pulled
// by tag and by digest.
func TestContainerScratchImage(t *testing.T) {
	env := containertest.Require(t)
	h := ctrHost(t, env, local.Options{Executable: staticWorker(t)})
	double := meadowrun.Named[int, int]("double")
	repo, tag := repoTag(t, env.ScratchImage)
	drepo, digest := repoDigest(t, env.ScratchDigest)
	for _, d := range []meadowrun.Deployment{
		meadowrun.ContainerImage(repo, tag, ctrSecret(), nil),
		meadowrun.ContainerImageAtDigest(drepo, digest, ctrSecret(), nil),
	} {
		out := &hosttest.SyncBuffer{}
		o := meadowrun.Options{Deployment: d, LogDir: t.TempDir(), Output: out}
		got, err := meadowrun.RunMap(t.Context(), double, []int{1, 2, 3}, h, &meadowrun.MapOptions{Options: o})
		if err != nil || fmt.Sprint(got) != "[2 4 6]" {
			t.Fatalf("map in the scratch image = %v, %v; want [2 4 6]", got, err)
		}
		if !strings.Contains(out.String(), "[task 2] doubling 3") {
			t.Fatalf("output %q: want each task's output labelled", out)
		}
		if _, err := meadowrun.RunCommand(t.Context(), []string{"/hello", "in", "a", "job"}, h,
			&meadowrun.CommandOptions{Options: o}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "hello from scratch in a job") {
			t.Fatalf("command output %q: want the image's program's", out)
		}
	}
}

// A program built with cgo cannot run in an image without its C
// library: the error says so and what to do.
func TestContainerDynamicProgramInScratch(t *testing.T) {
	env := containertest.Require(t)
	exe, _ := os.Executable()
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP
	}
	f.Close()
	h := ctrHost(t, env, local.Options{})
	repo, tag := repoTag(t, env.ScratchImage)
	o := meadowrun.Options{Deployment: meadowrun.ContainerImage(repo, tag, ctrSecret(), nil), LogDir: t.TempDir(), Output: &hosttest.SyncBuffer{}}
	_, err = meadowrun.RunFunction(t.Context(), ctrHostname.With(0), h, &o)
	switch {
	case dynamic && (err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0")):
		t.Fatalf("a dynamically linked test program in a scratch image: error = %v, want one that says to build with CGO_ENABLED=0", err)
	case !dynamic && err != nil:
		t.Fatalf("a static test program in a scratch image: %v", err)
	}
}

// Bad images and credentials fail at once with what to change.
func TestContainerBadImages(t *testing.T) {
	env := containertest.Require(t)
	h := ctrHost(t, env, local.Options{})
	repo, tag := repoTag(t, env.DebianImage)
	drepo, _ := repoDigest(t, env.DebianDigest)
	t.Setenv("MR_TEST_WRONG_PASSWORD", "not-the-password")
	// A tag not on the machine yet: its pull checks the credentials.
	frepo, ftag := containertest.FreshTag(t, env)
	cases := []struct {
		name string
		d    meadowrun.Deployment
		want error
		text string
	}{
		{"missing tag", meadowrun.ContainerImage(repo, "no-such-tag", ctrSecret(), nil), meadowrun.ErrImageNotFound, "no-such-tag"},
		{"missing repository", meadowrun.ContainerImage(env.Registry+"/meadowrun-test/nothing", "v1", ctrSecret(), nil), meadowrun.ErrImageNotFound, "nothing"},
		{"digest that matches nothing", meadowrun.ContainerImageAtDigest(drepo, "sha256:"+strings.Repeat("0", 64), ctrSecret(), nil),
			meadowrun.ErrImageNotFound, "digest"},
		{"wrong password", meadowrun.ContainerImage(frepo, ftag, meadowrun.SecretFromEnv("MR_TEST_REGISTRY_USER", "MR_TEST_WRONG_PASSWORD"), nil),
			meadowrun.ErrRegistryAuth, "check the Secret"},
		{"no credentials", meadowrun.ContainerImage(frepo, ftag, meadowrun.Secret{}, nil), meadowrun.ErrRegistryAuth, "Secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := meadowrun.Options{Deployment: c.d, LogDir: t.TempDir(), Output: &hosttest.SyncBuffer{}}
			start := time.Now()
			_, err := meadowrun.RunFunction(t.Context(), ctrHostname.With(0), h, &o)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("error = %v, want %v mentioning %q", err, c.want, c.text)
			}
			if strings.Contains(err.Error(), env.RegistryPassword) || strings.Contains(err.Error(), "not-the-password") {
				t.Fatalf("the error shows a password: %v", err)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Fatalf("took %s: a bad image must fail at once", d)
			}
		})
	}
	t.Run("the right password pulls the same tag", func(t *testing.T) {
		o := meadowrun.Options{Deployment: meadowrun.ContainerImage(frepo, ftag, ctrSecret(), nil), LogDir: t.TempDir(), Output: &hosttest.SyncBuffer{}}
		if _, err := meadowrun.RunFunction(t.Context(), ctrHostname.With(0), h, &o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unset secret variables", func(t *testing.T) {
		o := meadowrun.Options{Deployment: meadowrun.ContainerImage(repo, tag, meadowrun.SecretFromEnv("MR_TEST_UNSET_1", "MR_TEST_UNSET_2"), nil)}
		_, err := meadowrun.RunFunction(t.Context(), ctrHostname.With(0), h, &o)
		if !errors.Is(err, meadowrun.ErrInvalidOptions) || !strings.Contains(err.Error(), "MR_TEST_UNSET_1") {
			t.Fatalf("error = %v, want ErrInvalidOptions naming the variables", err)
		}
	})
}

// Without an engine, the error says how to start one.
func TestContainerNoEngine(t *testing.T) {
	env := containertest.Require(t)
	h := ctrHost(t, env, local.Options{})
	h2, err := local.NewHost(t.Context(), local.Options{DockerHost: "unix://" + filepath.Join(t.TempDir(), "no-docker.sock")})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	_ = h
	o := meadowrun.Options{Deployment: debian(t, env), LogDir: t.TempDir()}
	_, err = meadowrun.RunFunction(t.Context(), ctrHostname.With(0), h2, &o)
	if !errors.Is(err, meadowrun.ErrNoEngine) || !strings.Contains(err.Error(), "dockerd") {
		t.Fatalf("error = %v, want ErrNoEngine saying how to start one", err)
	}
}

// A sidecar starts before the task and is reachable from it on localhost
// and by its names; one that exits at once fails the job with its output.
func TestContainerSidecars(t *testing.T) {
	env := containertest.Require(t)
	h := ctrHost(t, env, local.Options{})
	repo, tag := repoTag(t, env.ScratchImage)
	o := meadowrun.Options{Deployment: debian(t, env), LogDir: t.TempDir(), Output: &hosttest.SyncBuffer{},
		Sidecars: []meadowrun.Container{{Repository: repo, Tag: tag, Name: "greeter", Credentials: ctrSecret(),
			Args: []string{"-listen", ":7071"}}}}
	for _, addr := range []string{"localhost:7071", "greeter:7071", "meadowrun-sidecar-0:7071"} {
		line, err := meadowrun.RunFunction(t.Context(), ctrDial.With(addr), h, &o)
		if err != nil || !strings.HasPrefix(line, "hello from scratch") {
			t.Fatalf("dialing the sidecar at %s: %q, %v", addr, line, err)
		}
	}
	o.Sidecars[0].Args = []string{"-exit", "3", "sidecar-says-goodbye"}
	_, err := meadowrun.RunFunction(t.Context(), ctrDial.With("localhost:7071"), h, &o)
	if !errors.Is(err, meadowrun.ErrSidecarExited) || !strings.Contains(err.Error(), "sidecar-says-goodbye") ||
		!strings.Contains(err.Error(), "exit code 3") {
		t.Fatalf("a sidecar that exits at once: error = %v, want ErrSidecarExited with its code and output", err)
	}
}

// A port taken by another program is a clear error.
func TestContainerPortInUse(t *testing.T) {
	env := containertest.Require(t)
	h := ctrHost(t, env, local.Options{})
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	o := meadowrun.Options{Deployment: debian(t, env), LogDir: t.TempDir(), Ports: []string{port}}
	_, err = meadowrun.RunFunction(t.Context(), ctrHostname.With(0), h, &o)
	if !errors.Is(err, meadowrun.ErrPortInUse) || !strings.Contains(err.Error(), "port "+port) {
		t.Fatalf("error = %v, want ErrPortInUse naming port %s", err, port)
	}
}

// ctrServe serves one connection on port from inside the job's container.
var ctrServe = meadowrun.Register("ctr-serve", func(ctx context.Context, port int) (string, error) {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return "", err
	}
	defer l.Close()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := l.Accept()
	if err != nil {
		return "", err
	}
	defer c.Close()
	host, _ := os.Hostname()
	_, err = fmt.Fprintf(c, "served by %s\n", host)
	return host, err
})

// A job's port reaches its worker in the container from the machine while
// the job runs, and is closed after it.
func TestContainerPorts(t *testing.T) {
	env := containertest.Require(t)
	h := ctrHost(t, env, local.Options{})
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	o := meadowrun.Options{Deployment: debian(t, env), LogDir: t.TempDir(), Ports: []string{strconv.Itoa(port)}}
	type result struct {
		host string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		host, err := meadowrun.RunFunction(t.Context(), ctrServe.With(port), h, &o)
		done <- result{host, err}
	}()
	// Until the worker listens, the engine's proxy accepts and hangs up.
	var line string
	for deadline := time.Now().Add(30 * time.Second); !strings.HasPrefix(line, "served by") && time.Now().Before(deadline); {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			line, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
		if !strings.HasPrefix(line, "served by") {
			time.Sleep(50 * time.Millisecond)
		}
	}
	r := <-done
	if r.err != nil || line != "served by "+r.host+"\n" {
		t.Fatalf("the job's port served %q; the job returned %q, %v", line, r.host, r.err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("port %d still open 10 s after its job ended", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A Python function runs on the image's Python, importing the caller's
// code.
func TestContainerPython(t *testing.T) {
	env := containertest.Require(t)
	h := ctrHost(t, env, local.Options{})
	repo, tag := repoTag(t, env.DebianImage)
	t.Chdir("testdata/py")
	o := meadowrun.Options{Deployment: meadowrun.ContainerInterpreter(repo, tag, ctrSecret()).WithGlobs("mrtest/*.py"),
		LogDir: t.TempDir(), Output: &hosttest.SyncBuffer{}}
	got, err := meadowrun.RunMap(t.Context(), pySquare, []int{1, 2, 3}, h, &meadowrun.MapOptions{Options: o})
	if err != nil || fmt.Sprint(got) != "[1 4 9]" {
		t.Fatalf("Python map in the container = %v, %v", got, err)
	}
	_, err = meadowrun.RunFunction(t.Context(), pyFails.With(pyMessage{Message: "boom"}), h, &o)
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Type != "ValueError" || te.Message != "boom" {
		t.Fatalf("error = %v, want a TaskError with the Python exception", err)
	}
}

// A detached job in a container is journaled with where its secret is,
// never with the secret's values.
func TestContainerDetachedKeepsNoSecret(t *testing.T) {
	env := containertest.Require(t)
	ctrHost(t, env, local.Options{}) // sets the secret's variables
	t.Setenv("DOCKER_HOST", env.DockerHost)
	o := meadowrun.Options{Deployment: debian(t, env), LogDir: t.TempDir()}
	j, err := meadowrun.SubmitCommand(t.Context(), []string{"sh", "-c", "echo detached in $MR_DEPLOY"}, meadowrun.Local(),
		&meadowrun.CommandOptions{Options: o}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := j.Wait(t.Context())
	if err != nil || res.ReturnCode != 0 {
		t.Fatalf("detached job: %+v, %v", res, err)
	}
	dir := os.Getenv("XDG_STATE_HOME")
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), env.RegistryPassword) {
			t.Errorf("%s holds the registry password", p)
		}
		return nil
	})
}
