package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/cli"
	"github.com/meadowrun-go/meadowrun/internal/k8shost"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

// k8sSquareSay prints what it does and returns its argument's square.
var k8sSquareSay = meadowrun.Register("k8s.SquareSay", func(ctx context.Context, x int) (int, error) {
	fmt.Printf("squaring %d\n", x)
	return x * x, nil
})

// A job kept in the cluster whose supervisor's pod has ended (the batch
// Job complete) is still read from another machine: its record, results
// and log come from a reader pod over the volume, made on demand; a
// cancel says the job has finished; the CLI imports it on yet another
// machine (meadowrun jobs import) and prints its state, results and log; the
// reader is gone once idle.
func TestKubernetesEndedJobIsReadFromTheVolume(t *testing.T) {
	c := k8stest.Require(t)
	cs := client(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pvc, sa := jobsVolume(t, c, cs)
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	opts := kubernetes.Options{JobsVolume: pvc, JobsServiceAccount: sa}
	h := newK8s(t, c, opts)
	mo := &meadowrun.MapOptions{Options: meadowrun.Options{Resources: &meadowrun.Resources{LogicalCPU: 0.2, MemoryGB: 0.25}}}
	m, err := meadowrun.SubmitMap(ctx, k8sSquareSay, []int{2, 3}, h, mo, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := m.ID()
	removeSupervisors(t, c, cs, id)
	h.Close()
	name := k8shost.SupervisorJobName(id)
	for {
		bj, err := cs.BatchV1().Jobs(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && slices.ContainsFunc(bj.Status.Conditions, func(c batchv1.JobCondition) bool {
			return c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue
		}) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the supervisor Job %s did not complete: %+v, %v", name, bj, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	pods, err := cs.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			t.Fatalf("the supervisor Job completed with pod %s running", p.Name)
		}
	}

	// Another machine: a journal without the job, a host from the
	// kubeconfig.
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	other := newK8s(t, c, opts)
	if _, err := meadowrun.ImportJob(ctx, other, id); err != nil {
		t.Fatal(err)
	}
	info, err := meadowrun.GetJob(ctx, id)
	if err != nil || info.State != meadowrun.JobSucceeded || info.Done != 2 {
		t.Fatalf("the ended job: %+v, %v; want it succeeded with 2 results", info, err)
	}
	am, err := meadowrun.AttachMap[int](ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for r := range am.AsCompleted(ctx) {
		if r.Err != nil {
			t.Fatalf("task %d: %v", r.TaskID, r.Err)
		}
		got = append(got, r.Value)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{4, 9}) {
		t.Fatalf("results %v, want 4 and 9", got)
	}
	var log bytes.Buffer
	if err := meadowrun.JobLog(ctx, id, &log, nil); err != nil || !strings.Contains(log.String(), "squaring 3") {
		t.Fatalf("the ended job's log %q, %v; want it to say squaring 3", log.String(), err)
	}
	if err := meadowrun.CancelJob(ctx, id); !errors.Is(err, meadowrun.ErrJobFinished) {
		t.Fatalf("cancelling the ended job: %v, want ErrJobFinished", err)
	}
	// The CLI, on a third machine: jobs import, then jobs and attach.
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	var out, errb bytes.Buffer
	if code := cli.Main(ctx, []string{"jobs", "import", "--host", other.URL(), id}, strings.NewReader(""), &out, &errb); code != 0 ||
		!strings.Contains(out.String(), id) || !strings.Contains(out.String(), "succeeded") {
		t.Fatalf("meadowrun jobs import: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := cli.Main(ctx, []string{"jobs", id}, strings.NewReader(""), &out, &errb); code != 0 || !strings.Contains(out.String(), "succeeded") {
		t.Fatalf("meadowrun jobs %s: exit %d\n%s\n%s", id, code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := cli.Main(ctx, []string{"attach", "--json", id}, strings.NewReader(""), &out, &errb); code != 0 ||
		!strings.Contains(out.String(), `"value":4`) || !strings.Contains(out.String(), `"value":9`) {
		t.Fatalf("meadowrun attach %s: exit %d\n%s\n%s", id, code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := cli.Main(ctx, []string{"logs", id}, strings.NewReader(""), &out, &errb); code != 0 || !strings.Contains(out.String(), "squaring 2") {
		t.Fatalf("meadowrun logs %s: exit %d\n%s\n%s", id, code, out.String(), errb.String())
	}
	readers := k8shost.LabelReader + "=true," + k8shost.LabelJob + "=" + name
	if l, err := cs.BatchV1().Jobs(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: readers}); err != nil || len(l.Items) != 1 {
		t.Fatalf("reader Jobs: %v, %v; want one", l, err)
	}
	// Once no client uses it the reader ends and its batch Job goes.
	other.Close()
	for {
		l, err := cs.BatchV1().Jobs(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: readers})
		if err == nil && len(l.Items) == 0 {
			break
		}
		if ctx.Err() != nil || apierrors.IsForbidden(err) {
			t.Fatalf("the reader Job is still there: %v, %v", l, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
