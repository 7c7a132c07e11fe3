package kubernetes_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

var k8sSlowSquare = meadowrun.Register("k8s.SlowSquare", func(ctx context.Context, x int) (int, error) {
	time.Sleep(400 * time.Millisecond)
	return x * x, nil
})

// chaosMap runs a map of n slow tasks on h and calls disrupt once after
// results have come; every task must be delivered exactly once, with its
// value, and some must have run again (the tasks lost with their pods).
func chaosMap(t *testing.T, h *meadowrun.Host, n int, after int, disrupt func()) {
	t.Helper()
	xs := make([]int, n)
	for i := range xs {
		xs[i] = i
	}
	seen := make([]int, n)
	got, rerun := 0, 0
	for r := range meadowrun.RunMapAsCompleted(context.Background(), k8sSlowSquare, xs, h, &meadowrun.MapOptions{
		Options:     meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{LogicalCPU: 0.2}},
		Concurrency: 2, MaxAttempts: 3}) {
		if r.TaskID < 0 || r.TaskID >= n {
			t.Fatalf("result for task %d: %v", r.TaskID, r.Err)
		}
		seen[r.TaskID]++
		if r.Err != nil {
			t.Errorf("task %d attempt %d: %v", r.TaskID, r.Attempt, r.Err)
		} else if r.Value != r.TaskID*r.TaskID {
			t.Errorf("task %d: %d, want %d", r.TaskID, r.Value, r.TaskID*r.TaskID)
		}
		if r.Attempt > 1 {
			rerun++
		}
		if got++; got == after {
			disrupt()
		}
	}
	for i, c := range seen {
		if c != 1 {
			t.Errorf("task %d delivered %d times, want once", i, c)
		}
	}
	if rerun == 0 {
		t.Errorf("no task ran again: the disruption lost none (the pods were not running tasks?)")
	}
	t.Logf("%d tasks, %d ran again", n, rerun)
}

// running returns the names of this test's running pods, waiting for at
// least one.
func runningPods(t *testing.T, cs k8s.Interface, c k8stest.Cluster, sel string) []string {
	t.Helper()
	var names []string
	for _, p := range listPods(t, cs, c, sel) {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	if len(names) == 0 {
		t.Fatalf("no running pod of %s mid-map", sel)
	}
	return names
}

// Worker pods deleted mid-map: their tasks run again in new pods, and
// every result is delivered once.
func TestKubernetesChaosPodsDeletedMidMap(t *testing.T) {
	c := k8stest.Require(t)
	cs := client(t, c)
	h, sel := ownPods(t, c, kubernetes.Options{})
	chaosMap(t, h, 30, 6, func() {
		grace := int64(0)
		for _, name := range runningPods(t, cs, c, sel) {
			if err := cs.CoreV1().Pods(c.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
				t.Errorf("deleting pod %s: %v", name, err)
			}
			t.Logf("deleted pod %s", name)
		}
	})
}

// The node cordoned and this map's pods evicted through the Eviction API
// (a drain), mid-map: the tasks lost run again once the node takes pods,
// and every result is delivered once. The cordon lasts seconds, and is
// undone in any case: the cluster is shared.
func TestKubernetesChaosNodeDrainedMidMap(t *testing.T) {
	c := k8stest.Require(t)
	cs := client(t, c)
	h, sel := ownPods(t, c, kubernetes.Options{})
	cordon := func(on bool) error {
		_, err := cs.CoreV1().Nodes().Patch(context.Background(), c.Node, "application/merge-patch+json",
			[]byte(fmt.Sprintf(`{"spec":{"unschedulable":%v}}`, on)), metav1.PatchOptions{})
		return err
	}
	t.Cleanup(func() {
		if err := cordon(false); err != nil {
			t.Errorf("uncordoning node %s: %v", c.Node, err)
		}
	})
	chaosMap(t, h, 30, 6, func() {
		pods := runningPods(t, cs, c, sel)
		if err := cordon(true); err != nil {
			t.Fatalf("cordoning node %s: %v", c.Node, err)
		}
		for _, name := range pods {
			err := cs.PolicyV1().Evictions(c.Namespace).Evict(context.Background(), &policyv1.Eviction{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace}})
			if err != nil {
				t.Errorf("evicting pod %s: %v", name, err)
			}
			t.Logf("evicted pod %s", name)
		}
		// Long enough for the pods to go while nothing is scheduled.
		time.Sleep(3 * time.Second)
		if err := cordon(false); err != nil {
			t.Errorf("uncordoning node %s: %v", c.Node, err)
		}
	})
}
