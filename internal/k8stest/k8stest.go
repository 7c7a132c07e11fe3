// Package k8stest gives tests the single-node cluster that scripts/k8s.sh
// starts (docs/testing-kubernetes.md). Start it as root with
//
//	scripts/k8s.sh up DIR
//
// and point the tests at it with MEADOWRUN_K8S=DIR. Without that variable
// the tests that call [Require] skip, unless MEADOWRUN_REQUIRE_K8S=1 makes
// them fail instead (as in CI).
package k8stest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/envfile"
)

// EnvDir names the environment variable that holds the DIR given to
// scripts/k8s.sh up.
const EnvDir = "MEADOWRUN_K8S"

// EnvRequire names the environment variable that, set to 1, makes
// [Require] fail rather than skip when no cluster is configured.
const EnvRequire = "MEADOWRUN_REQUIRE_K8S"

// Cluster describes the running cluster, from DIR/k8s.env.
type Cluster struct {
	// KubeConfig is the admin's kubeconfig; Context its context.
	KubeConfig, Context string
	// NobodyKubeConfig authenticates a user without any RBAC binding.
	NobodyKubeConfig string
	// Namespace is the tests' namespace; Node the one node's name.
	Namespace, Node string
	// Image is the base image of worker pods (busybox and the C library).
	Image string
	// PythonImage is Image with Debian's python3; "" when the cluster's
	// script predates it.
	PythonImage string
	// FakeGPUs is how many nvidia.com/gpu the node advertises.
	FakeGPUs int
	// Server is the API server's URL.
	Server string
}

// Require returns the cluster that MEADOWRUN_K8S names, skipping or
// failing the test when there is none.
func Require(t testing.TB) Cluster {
	t.Helper()
	dir := os.Getenv(EnvDir)
	if dir == "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(EnvDir + " is not set: start the test cluster with scripts/k8s.sh up DIR")
		}
		t.Skip("no test cluster: run scripts/k8s.sh up DIR and set " + EnvDir + "=DIR")
	}
	kv, err := envfile.Read(filepath.Join(dir, "k8s.env"))
	if err != nil {
		t.Fatalf("%s: %v", EnvDir, err)
	}
	c := Cluster{KubeConfig: kv["KUBECONFIG"], Context: kv["CONTEXT"], NobodyKubeConfig: kv["NOBODY_KUBECONFIG"],
		Namespace: kv["NAMESPACE"], Node: kv["NODE"], Image: kv["IMAGE"], PythonImage: kv["PYTHON_IMAGE"], Server: kv["SERVER"]}
	c.FakeGPUs, _ = strconv.Atoi(kv["FAKE_GPUS"])
	if c.KubeConfig == "" || c.Namespace == "" || c.Image == "" {
		t.Fatalf("%s/k8s.env lacks KUBECONFIG, NAMESPACE or IMAGE", dir)
	}
	return c
}
