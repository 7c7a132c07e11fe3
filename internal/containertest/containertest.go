// Package containertest finds the container engine and registry that
// scripts/containers.sh starts for the tests (docs/testing-containers.md).
package containertest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	f, err := os.Open(filepath.Join(dir, "containers.env"))
	if err != nil {
		t.Fatalf("MEADOWRUN_CONTAINERS: %v", err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = v
		}
	}
	e := Env{DockerHost: kv["DOCKER_HOST"], Registry: kv["REGISTRY"], RegistryUser: kv["REGISTRY_USER"],
		RegistryPassword: kv["REGISTRY_PASSWORD"], ScratchImage: kv["SCRATCH_IMAGE"], ScratchDigest: kv["SCRATCH_DIGEST"],
		DebianImage: kv["DEBIAN_IMAGE"], DebianDigest: kv["DEBIAN_DIGEST"]}
	if e.DockerHost == "" || e.DebianImage == "" || e.ScratchImage == "" {
		t.Fatalf("%s/containers.env lacks DOCKER_HOST, DEBIAN_IMAGE or SCRATCH_IMAGE", dir)
	}
	return e
}
