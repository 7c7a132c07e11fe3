package kubernetes_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/bucket"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

// k8sCountWithFile reads the deployment's file jobdata/in.txt (relative
// to the worker's directory: the deployment's tree) and then counts its
// argument as k8sCount does, returning "CONTENT|ARG:EXECUTIONS".
var k8sCountWithFile = meadowrun.Register("k8s.CountWithFile", func(ctx context.Context, x int) (string, error) {
	b, err := os.ReadFile(filepath.Join("jobdata", "in.txt"))
	if err != nil {
		return "", err
	}
	s, err := countArg(ctx, x)
	return string(b) + "|" + s, err
})

// A detached map kept in the cluster with a MirrorLocal glob: the
// supervisor's workers read the file the glob matched on the submitting
// machine, which is removed there once the map is submitted; the
// supervisor's pod deleted mid-map, the next supervisor finds the file on
// the volume, and every task reads it, each result once.
func TestKubernetesDetachedJobInTheClusterGetsItsFiles(t *testing.T) {
	c := k8stest.Require(t)
	cs := client(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pvc, sa := jobsVolume(t, c, cs)
	counts := t.TempDir()
	os.Chmod(counts, 0o777)
	const n, blockFrom = 4, 2
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	work := t.TempDir()
	b := make([]byte, 8)
	rand.Read(b)
	content := "data " + hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Join(work, "jobdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "jobdata", "in.txt"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	h := newK8s(t, c, kubernetes.Options{JobsVolume: pvc, JobsServiceAccount: sa, ContainerMounts: []string{counts + ":" + counts}})
	mo := &meadowrun.MapOptions{Concurrency: 2, Options: meadowrun.Options{
		Resources: &meadowrun.Resources{LogicalCPU: 0.2, MemoryGB: 0.25},
		Deployment: meadowrun.MirrorLocal([]string{"jobdata/*.txt"},
			map[string]string{"K8S_COUNT_DIR": counts, "K8S_COUNT_BLOCK_FROM": strconv.Itoa(blockFrom)})}}
	m, err := meadowrun.SubmitMap(ctx, k8sCountWithFile, []int{0, 1, 2, 3}, h, mo, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := m.ID()
	removeSupervisors(t, c, cs, id)
	h.Close()
	// The submitting machine no longer has the file.
	if err := os.RemoveAll(filepath.Join(work, "jobdata")); err != nil {
		t.Fatal(err)
	}
	replaceSupervisorMidMap(t, ctx, cs, c.Namespace, id, blockFrom, counts)
	am, err := meadowrun.AttachMap[string](ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for r := range am.AsCompleted(ctx) {
		if r.Err != nil {
			t.Fatalf("task %d: %v", r.TaskID, r.Err)
		}
		seen[r.TaskID]++
		got, count, _ := strings.Cut(r.Value, "|")
		if got != content {
			t.Errorf("task %d read %q from the deployment's file, want %q", r.TaskID, got, content)
		}
		if arg, _, _ := strings.Cut(count, ":"); arg != strconv.Itoa(r.TaskID) {
			t.Errorf("task %d has result %q: another task's", r.TaskID, r.Value)
		}
	}
	for i := range n {
		if seen[i] != 1 {
			t.Errorf("task %d: %d results, want exactly one", i, seen[i])
		}
	}
	info, err := am.Info(ctx)
	if err != nil || info.State != meadowrun.JobSucceeded || info.Done != n || info.Resumed != 1 {
		t.Fatalf("after the map: %+v, %v; want it succeeded, resumed once", info, err)
	}
}

// A durable job kept in the cluster, on a host with a storage bucket:
// its deployment file is written to the bucket once, and the
// supervisor's pod and the worker's pod each download it from there
// (rather than through the API server); the task reads it.
func TestKubernetesDetachedJobFilesComeThroughTheBucket(t *testing.T) {
	c := k8stest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	b := make([]byte, 4)
	rand.Read(b)
	name := "meadowrun-jobfiles-" + hex.EncodeToString(b)
	p, _, spec := s3TestBucket(t, c, name, name)
	cs := client(t, c)
	pvc, sa := jobsVolume(t, c, cs)
	// The supervisors open the host with its bucket: their service
	// account reads the key pair's Secret.
	meta := metav1.ObjectMeta{Name: name}
	role := &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{name}, Verbs: []string{"get"}}}}
	if _, err := cs.RbacV1().Roles(c.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.RbacV1().Roles(c.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	rb := &rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: c.Namespace}}}
	if _, err := cs.RbacV1().RoleBindings(c.Namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.RbacV1().RoleBindings(c.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})

	work := t.TempDir()
	rand.Read(b)
	content := "through the bucket " + hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Join(work, "jobdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "jobdata", "in.txt"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	h := newK8s(t, c, kubernetes.Options{JobsVolume: pvc, JobsServiceAccount: sa, StorageSpec: spec})
	fn, err := meadowrun.SubmitFunction(ctx, k8sReadFile.With("jobdata/in.txt"), h,
		&meadowrun.Options{Resources: &meadowrun.Resources{LogicalCPU: 0.2, MemoryGB: 0.25}, Deployment: meadowrun.MirrorLocal([]string{"jobdata/*.txt"}, nil)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeSupervisors(t, c, cs, fn.ID())
	h.Close()
	got, err := fn.Wait(ctx)
	if err != nil || got != content {
		t.Fatalf("the detached function read %q, %v; want %q", got, err, content)
	}
	key := "/" + name + "/" + bucket.ContentKey(fmt.Sprintf("%x", sha256.Sum256([]byte(content))))
	if puts, gets := p.count(http.MethodPut, key), p.count(http.MethodGet, key); puts != 1 || gets != 2 {
		t.Fatalf("the file was written %d times and downloaded %d times; want written once, downloaded by the supervisor's pod and the worker's", puts, gets)
	}
}
