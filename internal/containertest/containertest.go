// Package containertest finds the container engine and registry that
// scripts/containers.sh starts for the tests (docs/testing-containers.md).
package containertest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/meadowrun-go/meadowrun/internal/envfile"
)

// Env describes the running components, from DIR/containers.env.
type Env struct {
	// DockerHost is the engine's address (unix://...).
	DockerHost string
	// Registry is the registry's host:port; RegistryUser and
	// RegistryPassword log in to it.
	Registry, RegistryUser, RegistryPassword string
	// ScratchImage and ScratchDigest name the FROM-scratch image with
	// /hello, by tag and by digest; DebianImage and DebianDigest the
	// Debian image with a shell and Python.
	ScratchImage, ScratchDigest, DebianImage, DebianDigest string
}

// Require returns the environment that MEADOWRUN_CONTAINERS names. When
// it is not set the test is skipped, or fails when
// MEADOWRUN_REQUIRE_CONTAINERS=1 (as in CI).
func Require(t testing.TB) Env {
	t.Helper()
	dir := os.Getenv("MEADOWRUN_CONTAINERS")
	if dir == "" {
		if os.Getenv("MEADOWRUN_REQUIRE_CONTAINERS") == "1" {
			t.Fatal("MEADOWRUN_CONTAINERS is not set: start the test engine with scripts/containers.sh up DIR")
		}
		t.Skip("no test container engine: run scripts/containers.sh up DIR and set MEADOWRUN_CONTAINERS=DIR")
	}
	e, err := Load(dir)
	if err != nil {
		t.Fatalf("MEADOWRUN_CONTAINERS: %v", err)
	}
	return e
}

// Load reads DIR/containers.env, which scripts/containers.sh up DIR
// writes.
func Load(dir string) (Env, error) {
	kv, err := envfile.Read(filepath.Join(dir, "containers.env"))
	if err != nil {
		return Env{}, err
	}
	e := Env{DockerHost: kv["DOCKER_HOST"], Registry: kv["REGISTRY"], RegistryUser: kv["REGISTRY_USER"],
		RegistryPassword: kv["REGISTRY_PASSWORD"], ScratchImage: kv["SCRATCH_IMAGE"], ScratchDigest: kv["SCRATCH_DIGEST"],
		DebianImage: kv["DEBIAN_IMAGE"], DebianDigest: kv["DEBIAN_DIGEST"]}
	if e.DockerHost == "" || e.DebianImage == "" || e.ScratchImage == "" {
		return Env{}, fmt.Errorf("%s/containers.env lacks DOCKER_HOST, DEBIAN_IMAGE or SCRATCH_IMAGE", dir)
	}
	return e, nil
}

// FreshTag pushes the Debian test image under a new tag of its
// repository and removes that tag from the engine, keeping the image:
// a deployment of the tag is then pulled from the registry, which is what
// a test of what a pull checks (credentials) needs, while other tests use
// the image's other tags.
func FreshTag(t testing.TB, e Env) (repo, tag string) {
	t.Helper()
	ctx := context.Background()
	cli, err := client.NewClientWithOpts(client.WithHost(e.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: e.RegistryUser, Password: e.RegistryPassword, ServerAddress: e.Registry})
	if err != nil {
		t.Fatal(err)
	}
	stream := func(what string, rc io.ReadCloser, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		if strings.Contains(string(b), `"error"`) {
			t.Fatalf("%s: %s", what, b)
		}
	}
	rc, err := cli.ImagePull(ctx, e.DebianImage, image.PullOptions{RegistryAuth: auth})
	stream("pulling "+e.DebianImage, rc, err)
	repo = e.DebianImage[:strings.LastIndex(e.DebianImage, ":")]
	tag = fmt.Sprintf("fresh-%d-%d", os.Getpid(), time.Now().UnixNano())
	if err := cli.ImageTag(ctx, e.DebianImage, repo+":"+tag); err != nil {
		t.Fatal(err)
	}
	rc, err = cli.ImagePush(ctx, repo+":"+tag, image.PushOptions{RegistryAuth: auth})
	stream("pushing "+repo+":"+tag, rc, err)
	if _, err := cli.ImageRemove(ctx, repo+":"+tag, image.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	return repo, tag
}
