package kubernetes_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/k8shost"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

// envKilledClient makes TestKubernetesKilledClientChild the client the
// killed-client test kills.
const envKilledClient = "MEADOWRUN_TEST_K8S_KILLED_CLIENT"

// killedClientIdle is the idle timeout of the killed client's pods.
const killedClientIdle = 10 * time.Second

var k8sSleep = meadowrun.Register("k8s.Sleep", func(ctx context.Context, seconds int) (int, error) {
	fmt.Println("task started")
	select {
	case <-time.After(time.Duration(seconds) * time.Second):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return seconds, nil
})

// A client killed mid-map (SIGKILL: no Close, no clean-up) with reusable
// pods leaves nothing behind: its pods' agents see their client gone, stop
// its workers, end after their idle timeout, and the Jobs remove them.
func TestKubernetesKilledClientLeavesNoPods(t *testing.T) {
	if os.Getenv(envKilledClient) != "" {
		t.Skip("the child of this test runs TestKubernetesKilledClientChild")
	}
	c := k8stest.Require(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKubernetesKilledClientChild$", "-test.v")
	cmd.Env = append(os.Environ(), envKilledClient+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := false
		for sc.Scan() {
			if strings.Contains(sc.Text(), "task started") && !once {
				once = true
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Minute):
		t.Fatal("the child's tasks did not start within 5 minutes")
	}
	cs := client(t, c)
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s-%d-", host, cmd.Process.Pid)
	ctx := context.Background()
	mine := func() []string {
		l, err := cs.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: k8shost.LabelManaged + "=true"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range l.Items {
			if strings.HasPrefix(p.Annotations[k8shost.AnnotationOwner], owner) {
				names = append(names, p.Name+" ("+string(p.Status.Phase)+")")
			}
		}
		return names
	}
	if len(mine()) == 0 {
		t.Fatalf("no pod of the child (owner %s*) runs its tasks", owner)
	}
	cmd.Process.Kill()
	cmd.Wait()
	killed = true
	// The bound is the idle timeout plus the time Kubernetes takes to
	// end and remove a finished Job's pod: not a speed requirement.
	deadline := time.Now().Add(killedClientIdle + 2*time.Minute)
	for left := mine(); len(left) > 0; left = mine() {
		if time.Now().After(deadline) {
			t.Fatalf("the killed client's pods are still there %v after its death: %v", killedClientIdle+2*time.Minute, left)
		}
		time.Sleep(time.Second)
	}
}

// TestKubernetesKilledClientChild is the client of
// TestKubernetesKilledClientLeavesNoPods: a map of long tasks on a
// reusable pod, killed by the parent.
func TestKubernetesKilledClientChild(t *testing.T) {
	if os.Getenv(envKilledClient) == "" {
		t.Skip("run by TestKubernetesKilledClientLeavesNoPods")
	}
	c := k8stest.Require(t)
	h := newK8s(t, c, kubernetes.Options{IdleTimeout: killedClientIdle, Log: os.Stderr})
	// One worker, so one pod, whose agent the client has started (a pod
	// created but never given an agent ends 2 minutes after it started:
	// podScript).
	_, err := meadowrun.RunMap(context.Background(), k8sSleep, []int{600, 600}, h,
		&meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir(), Output: os.Stdout}, Concurrency: 1})
	t.Fatalf("the map ended before its client was killed: %v", err)
}
