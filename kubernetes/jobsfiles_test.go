package kubernetes_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/k8shost"
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
	for {
		info, err := meadowrun.GetJob(ctx, id)
		if err == nil && info.State.Final() {
			t.Fatalf("the map ended before the gate opened: %+v", info)
		}
		if err == nil && info.Done >= blockFrom {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("waiting for %d results: %+v, %v", blockFrom, info, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	sel := k8shost.LabelJob + "=" + k8shost.SupervisorJobName(id)
	pods, err := cs.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("supervisor pods: %v, %v; want one", pods, err)
	}
	first := pods.Items[0].Name
	if err := cs.CoreV1().Pods(c.Namespace).Delete(ctx, first, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := cs.CoreV1().Pods(c.Namespace).Get(ctx, first, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("pod %s is not gone: %v", first, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(counts, "gate"), nil, 0o666); err != nil {
		t.Fatal(err)
	}
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
