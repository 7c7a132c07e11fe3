package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/containertest"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
	mrssh "github.com/meadowrun-go/meadowrun/ssh"
)

// Container deployments on SSH machines: each machine's agent drives the
// test engine of scripts/containers.sh (the simulated machines share this
// machine's file system outside their homes, so the engine sees the
// agent's files when the agent's directory is outside them).

// ctrSSH is a host of the named machines whose agents use the test
// engine, with the temporary directory mounted in every worker container
// (the conformance suite's tests leave marks there).
func ctrSSH(t *testing.T, n *sshtest.Net, env containertest.Env, machines ...string) *meadowrun.Host {
	t.Helper()
	// Short: the agent's socket lives there.
	dir, err := os.MkdirTemp("", "mrctr")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return newSSH(t, n, mrssh.Options{RemoteDir: dir, DockerHost: env.DockerHost,
		ContainerMounts: []string{os.TempDir() + ":" + os.TempDir()}}, machines...)
}

// ctrDebian is the Debian test image, with the registry's credentials in
// a file that the machines see too: a detached job reads its secret on the
// machine that keeps it.
func ctrDebian(t *testing.T, env containertest.Env) meadowrun.Deployment {
	f, err := os.CreateTemp("", "mrsecret")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `{"username": %q, "password": %q}`, env.RegistryUser, env.RegistryPassword)
	f.Close()
	t.Cleanup(func() { os.Remove(f.Name()) })
	i := strings.LastIndex(env.DebianImage, ":") // the tag's, after the registry's port
	repo, tag := env.DebianImage[:i], env.DebianImage[i+1:]
	return meadowrun.ContainerImage(repo, tag, meadowrun.SecretFromFile(f.Name()), map[string]string{"MR_DEPLOY": "container"})
}

func TestConformanceSSHContainer(t *testing.T) {
	n := sshtest.Open(t)
	env := containertest.Require(t)
	hosttest.Run(t, hosttest.Config{
		NewHost:      func(t *testing.T) *meadowrun.Host { return ctrSSH(t, n, env, "h1", "h2") },
		MillionTasks: millionTasks / 100,
		Deployment:   ctrDebian(t, env),
	})
}

// The machines report their engine, and work runs in containers of the
// image on each of them.
func TestSSHContainerRunsInTheImage(t *testing.T) {
	n := sshtest.Open(t)
	env := containertest.Require(t)
	h := ctrSSH(t, n, env, "h1", "h2")
	ms, err := meadowrun.DescribeHost(t.Context(), h)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Err != nil || !strings.HasPrefix(m.Containers, "docker ") {
			t.Fatalf("machine %s: containers %q, err %v; want its engine", m.Name, m.Containers, m.Err)
		}
	}
	out := &hosttest.SyncBuffer{}
	o := meadowrun.Options{Deployment: ctrDebian(t, env), LogDir: t.TempDir(), Output: out}
	res, err := meadowrun.RunMap(t.Context(), sshWhere, []int{1, 2, 3, 4}, h, &meadowrun.MapOptions{Options: o, Concurrency: 4})
	if err != nil || len(res) != 4 {
		t.Fatalf("map: %v, %v", res, err)
	}
	if _, err := meadowrun.RunCommand(t.Context(), []string{"sh", "-c", "cat /etc/debian_version; echo deploy=$MR_DEPLOY"}, h,
		&meadowrun.CommandOptions{Options: o}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "deploy=container") || !strings.Contains(out.String(), "12.") {
		t.Fatalf("output %q: want Debian 12's version and the deployment's variable", out)
	}
}

// A bad image fails at once with the registry's answer, classified, and
// a machine without an engine says so.
func TestSSHContainerErrors(t *testing.T) {
	n := sshtest.Open(t)
	env := containertest.Require(t)
	h := ctrSSH(t, n, env, "h1")
	d := ctrDebian(t, env)
	repo := env.DebianImage[:strings.LastIndex(env.DebianImage, ":")]
	o := meadowrun.Options{Deployment: meadowrun.ContainerImage(repo, "no-such-tag", meadowrun.Secret{}, nil), LogDir: t.TempDir()}
	_, err := meadowrun.RunFunction(t.Context(), sshWhere.With(1), h, &o)
	if !errors.Is(err, meadowrun.ErrImageNotFound) && !errors.Is(err, meadowrun.ErrRegistryAuth) {
		t.Fatalf("a missing tag without credentials: %v, want ErrImageNotFound or ErrRegistryAuth", err)
	}
	t.Logf("%v", err)

	dir, _ := os.MkdirTemp("", "mrctr")
	defer os.RemoveAll(dir)
	none := newSSH(t, n, mrssh.Options{RemoteDir: dir, DockerHost: "unix://" + dir + "/no-docker.sock"}, "h2")
	o = meadowrun.Options{Deployment: d, LogDir: t.TempDir()}
	_, err = meadowrun.RunFunction(context.Background(), sshWhere.With(1), none, &o)
	if !errors.Is(err, meadowrun.ErrUnsupported) || !strings.Contains(err.Error(), "no container engine") {
		t.Fatalf("a machine without an engine: %v, want ErrUnsupported saying it has no engine", err)
	}
	ms, _ := meadowrun.DescribeHost(t.Context(), none)
	if len(ms) != 1 || ms[0].Containers != "" {
		t.Fatalf("machines %+v: want no engine reported", ms)
	}
}
