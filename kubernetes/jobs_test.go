package kubernetes_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/k8shost"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

// k8sCount notes one execution of its argument in a file of the
// directory K8S_COUNT_DIR names (a hostPath mount of the worker pods, on
// the one node: this machine), waits for the directory's gate file when
// the argument is K8S_COUNT_BLOCK_FROM or more, and returns
// "ARG:EXECUTIONS".
var k8sCount = meadowrun.Register("k8s.Count", countArg)

// countArg is k8sCount's function.
func countArg(ctx context.Context, x int) (string, error) {
	dir := os.Getenv("K8S_COUNT_DIR")
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(x)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return "", err
	}
	fmt.Fprintln(f, "run")
	f.Close()
	b, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(x)))
	if err != nil {
		return "", err
	}
	fmt.Printf("counting %d\n", x)
	if from, _ := strconv.Atoi(os.Getenv("K8S_COUNT_BLOCK_FROM")); x >= from {
		for {
			if _, err := os.Stat(filepath.Join(dir, "gate")); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return fmt.Sprintf("%d:%d", x, bytes.Count(b, []byte("\n"))), nil
}

// jobsVolume creates, for the test, what a namespace needs to keep
// durable jobs: a PersistentVolume (hostPath, a directory of this
// machine, which is the node) and its claim, and a service account bound
// to the Role of docs/kubernetes.md. All are removed at the end.
func jobsVolume(t *testing.T, c k8stest.Cluster, cs k8s.Interface) (pvc, sa string) {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 4)
	rand.Read(b)
	name := "meadowrun-jobs-test-" + hex.EncodeToString(b)
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	labels := map[string]string{"meadowrun.dev/test": name}
	meta := metav1.ObjectMeta{Name: name, Labels: labels}
	pv := &corev1.PersistentVolume{ObjectMeta: meta, Spec: corev1.PersistentVolumeSpec{
		Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
		StorageClassName:              "",
		ClaimRef:                      &corev1.ObjectReference{Namespace: c.Namespace, Name: name},
		PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}},
	}}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	empty := ""
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: meta, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		StorageClassName: &empty,
		VolumeName:       name,
		Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
	}}
	if _, err := cs.CoreV1().PersistentVolumeClaims(c.Namespace).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.CoreV1().PersistentVolumeClaims(c.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	if _, err := cs.CoreV1().ServiceAccounts(c.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.CoreV1().ServiceAccounts(c.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	role := &rbacv1.Role{ObjectMeta: meta, Rules: k8shost.SupervisorRules()}
	if _, err := cs.RbacV1().Roles(c.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.RbacV1().Roles(c.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	rb := &rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: c.Namespace}}}
	if _, err := cs.RbacV1().RoleBindings(c.Namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.RbacV1().RoleBindings(c.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name, name
}

// removeSupervisors deletes the batch Jobs of the test's durable jobs.
func removeSupervisors(t *testing.T, c k8stest.Cluster, cs k8s.Interface, ids ...string) {
	t.Cleanup(func() {
		bg := metav1.DeletePropagationBackground
		for _, id := range ids {
			sel := k8shost.LabelJob + "=" + k8shost.SupervisorJobName(id)
			cs.BatchV1().Jobs(c.Namespace).DeleteCollection(context.Background(), metav1.DeleteOptions{PropagationPolicy: &bg}, metav1.ListOptions{LabelSelector: sel})
		}
	})
}

// A detached map on a Kubernetes host with a jobs volume runs in the
// cluster: the client closes its host and the job goes on; a new host
// object, opened from the job's URL (the kubeconfig only), attaches to it
// and reads its log; its supervisor's pod deleted mid-map is replaced by
// Kubernetes, and the new supervisor resumes the map: every result comes
// exactly once and no task whose result was journaled runs again. A
// second map is cancelled from another handle.
func TestKubernetesDetachedJobsRunInTheCluster(t *testing.T) {
	c := k8stest.Require(t)
	cs := client(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pvc, sa := jobsVolume(t, c, cs)
	counts := t.TempDir()
	os.Chmod(counts, 0o777)
	t.Setenv("K8S_COUNT_DIR", counts)
	const n, blockFrom = 10, 6
	t.Setenv("K8S_COUNT_BLOCK_FROM", strconv.Itoa(blockFrom))
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	h := newK8s(t, c, kubernetes.Options{JobsVolume: pvc, JobsServiceAccount: sa, ContainerMounts: []string{counts + ":" + counts}})
	args := make([]int, n)
	for i := range args {
		args[i] = i
	}
	mo := &meadowrun.MapOptions{Concurrency: 2, Options: meadowrun.Options{
		Resources:  &meadowrun.Resources{LogicalCPU: 0.2, MemoryGB: 0.25},
		Deployment: meadowrun.MirrorLocal(nil, map[string]string{"K8S_COUNT_DIR": counts, "K8S_COUNT_BLOCK_FROM": strconv.Itoa(blockFrom)})}}
	m, err := meadowrun.SubmitMap(ctx, k8sCount, args, h, mo, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := m.ID()
	removeSupervisors(t, c, cs, id)
	// The client goes away; what follows uses new host objects, on
	// "another machine": a journal without the job, and a host built from
	// the kubeconfig, which finds the job by its id.
	h.Close()
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	if _, err := meadowrun.GetJob(ctx, id); !errors.Is(err, meadowrun.ErrJobNotFound) {
		t.Fatalf("GetJob from a journal without the job: %v, want ErrJobNotFound", err)
	}
	other := newK8s(t, c, kubernetes.Options{JobsVolume: pvc, JobsServiceAccount: sa, ContainerMounts: []string{counts + ":" + counts}})
	if _, err := meadowrun.ImportJob(ctx, other, id); err != nil {
		t.Fatal(err)
	}
	other.Close()
	info, err := meadowrun.GetJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.Machine != k8shost.SupervisorJobName(id) {
		t.Fatalf("job %s is kept by %q, want its supervisor Job %s", id, info.Machine, k8shost.SupervisorJobName(id))
	}
	// Once the tasks before the gate have their results journaled, the
	// supervisor's pod is deleted mid-map.
	first := replaceSupervisorMidMap(t, ctx, cs, c.Namespace, id, blockFrom, counts)
	sel := k8shost.LabelJob + "=" + k8shost.SupervisorJobName(id)
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
		arg, runs, _ := strings.Cut(r.Value, ":")
		if arg != strconv.Itoa(r.TaskID) {
			t.Errorf("task %d has result %q: another task's", r.TaskID, r.Value)
		}
		if r.TaskID < blockFrom && runs != "1" {
			t.Errorf("task %d ran %s times; its result was journaled before the pod was deleted", r.TaskID, runs)
		}
	}
	for i := range n {
		if seen[i] != 1 {
			t.Errorf("task %d: %d results, want exactly one", i, seen[i])
		}
		b, _ := os.ReadFile(filepath.Join(counts, strconv.Itoa(i)))
		if runs := bytes.Count(b, []byte("\n")); i < blockFrom && runs != 1 {
			t.Errorf("argument %d ran %d times, want once", i, runs)
		}
	}
	info, err = am.Info(ctx)
	if err != nil || info.State != meadowrun.JobSucceeded || info.Done != n || info.Resumed != 1 {
		t.Fatalf("after the map: %+v, %v; want it succeeded, resumed once", info, err)
	}
	pods, err := cs.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil || len(pods.Items) < 1 || pods.Items[0].Name == first && len(pods.Items) == 1 {
		t.Fatalf("supervisor pods after the deletion: %v, %v; want a new one", pods, err)
	}
	var log bytes.Buffer
	if err := meadowrun.JobLog(ctx, id, &log, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"counting 0", "counting 9"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the job's log lacks %q:\n%s", want, log.String())
		}
	}

	// A command and a function, submitted and forgotten, are waited for
	// through new handles.
	h3 := newK8s(t, c, kubernetes.Options{JobsVolume: pvc, JobsServiceAccount: sa})
	res := &meadowrun.Resources{LogicalCPU: 0.2, MemoryGB: 0.25}
	cmd, err := meadowrun.SubmitCommand(ctx, []string{"sh", "-c", "echo detached command; exit 3"}, h3, &meadowrun.CommandOptions{Options: meadowrun.Options{Resources: res}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeSupervisors(t, c, cs, cmd.ID())
	fn, err := meadowrun.SubmitFunction(ctx, k8sWhere.With(1), h3, &meadowrun.Options{Resources: res}, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeSupervisors(t, c, cs, fn.ID())
	h3.Close()
	ac, err := meadowrun.AttachCommand(ctx, cmd.ID())
	if err != nil {
		t.Fatal(err)
	}
	if jc, err := ac.Wait(ctx); jc == nil || jc.ReturnCode != 3 {
		t.Fatalf("detached command: %+v, %v; want exit code 3", jc, err)
	}
	log.Reset()
	if err := meadowrun.JobLog(ctx, cmd.ID(), &log, nil); err != nil || !strings.Contains(log.String(), "detached command") {
		t.Fatalf("the command's log %q, %v", log.String(), err)
	}
	af, err := meadowrun.Attach[string](ctx, fn.ID())
	if err != nil {
		t.Fatal(err)
	}
	if where, err := af.Wait(ctx); err != nil || !strings.HasPrefix(where, "meadowrun-") {
		t.Fatalf("detached function ran in %q, %v; want a worker pod", where, err)
	}

	// A second map, every task waiting on a gate that never opens, is
	// cancelled.
	os.Remove(filepath.Join(counts, "gate"))
	h2 := newK8s(t, c, kubernetes.Options{JobsVolume: pvc, JobsServiceAccount: sa, ContainerMounts: []string{counts + ":" + counts}})
	m2, err := meadowrun.SubmitMap(ctx, k8sCount, []int{100, 101}, h2, mo, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeSupervisors(t, c, cs, m2.ID())
	h2.Close()
	if err := meadowrun.CancelJob(ctx, m2.ID()); err != nil {
		t.Fatal(err)
	}
	if info, err := meadowrun.GetJob(ctx, m2.ID()); err != nil || info.State != meadowrun.JobCancelled {
		t.Fatalf("cancelled map: %+v, %v", info, err)
	}
}

// replaceSupervisorMidMap waits until the detached map id has blockFrom
// results journaled (its later tasks wait for the gate file in counts),
// deletes its supervisor's pod (Kubernetes makes another), waits until
// that pod is gone and opens the gate: what is left runs under the next
// supervisor.
func replaceSupervisorMidMap(t *testing.T, ctx context.Context, cs k8s.Interface, ns, id string, blockFrom int, counts string) (deleted string) {
	t.Helper()
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
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("supervisor pods: %v, %v; want one", pods, err)
	}
	first := pods.Items[0].Name
	if err := cs.CoreV1().Pods(ns).Delete(ctx, first, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, first, metav1.GetOptions{})
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
	return first
}
