package kubernetes_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

var k8sWhere = meadowrun.Register("k8s.Where", func(ctx context.Context, x int) (string, error) {
	h, _ := os.Hostname()
	return h, nil
})

// newK8s opens the test cluster with opts (kubeconfig, namespace and image
// of the cluster where opts names none).
func newK8s(t *testing.T, c k8stest.Cluster, opts kubernetes.Options) *meadowrun.Host {
	t.Helper()
	if opts.KubeConfig == "" {
		opts.KubeConfig = c.KubeConfig
	}
	if opts.Namespace == "" {
		opts.Namespace = c.Namespace
	}
	if opts.Image == "" {
		opts.Image = c.Image
	}
	if opts.IdleTimeout == 0 {
		// Pods left idle by a test end soon, making way for others.
		opts.IdleTimeout = 15 * time.Second
	}
	if opts.ScheduleTimeout == 0 {
		// The test node has 2 CPUs, two pods of the default size: a pod
		// may wait for those of earlier tests' hosts, in this process or
		// in the supervisors of detached jobs, which keep theirs until
		// they exit (the URL carries this to them).
		opts.ScheduleTimeout = 5 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = &hosttest.SyncBuffer{}
		if testing.Verbose() {
			opts.Log = os.Stderr
		}
	}
	h, err := kubernetes.NewHost(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func client(t *testing.T, c k8stest.Cluster) k8s.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeConfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestKubernetesRunsAFunctionInAPod(t *testing.T) {
	c := k8stest.Require(t)
	h := newK8s(t, c, kubernetes.Options{})
	ctx := context.Background()
	start := time.Now()
	got, err := meadowrun.RunFunction(ctx, k8sWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first call %v: ran in %s", time.Since(start), got)
	if !strings.HasPrefix(got, "meadowrun-") {
		t.Fatalf("ran in %q, want a meadowrun pod", got)
	}
	start = time.Now()
	const n = 20
	for i := 0; i < n; i++ {
		if _, err := meadowrun.RunFunction(ctx, k8sWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("warm call %v", time.Since(start)/n)
}

func TestConformanceKubernetes(t *testing.T) {
	c := k8stest.Require(t)
	hosttest.Run(t, hosttest.Config{
		NewHost: func(t *testing.T) *meadowrun.Host {
			// The suite's tasks leave marks in the test's temporary
			// directories: the pods see this machine's, the node's.
			return newK8s(t, c, kubernetes.Options{ContainerMounts: []string{os.TempDir() + ":" + os.TempDir()}})
		},
		MillionTasks: millionTasks,
	})
}

func k8sErr(t *testing.T, h *meadowrun.Host, o *meadowrun.Options, want error, mentions ...string) {
	t.Helper()
	if o == nil {
		o = &meadowrun.Options{}
	}
	o.LogDir = t.TempDir()
	_, err := meadowrun.RunFunction(context.Background(), k8sWhere.With(1), h, o)
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want an error wrapping %v", err, want)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("error %q does not mention %q", err, m)
		}
	}
	t.Logf("%v", err)
}

func TestKubernetesBadInputIsAClearError(t *testing.T) {
	c := k8stest.Require(t)
	ctx := context.Background()
	t.Run("a kubeconfig that does not exist", func(t *testing.T) {
		_, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: t.TempDir() + "/none"})
		if err == nil || !strings.Contains(err.Error(), "kubeconfig") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
	})
	t.Run("an unknown context", func(t *testing.T) {
		_, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: c.KubeConfig, Context: "no-such-context"})
		if err == nil || !strings.Contains(err.Error(), `no context "no-such-context"`) || !strings.Contains(err.Error(), c.Context) {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
	})
	t.Run("a namespace that does not exist", func(t *testing.T) {
		_, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: c.KubeConfig, Namespace: "meadowrun-no-such-namespace"})
		if err == nil || !strings.Contains(err.Error(), "namespace meadowrun-no-such-namespace does not exist") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
	})
	t.Run("an unreachable API server", func(t *testing.T) {
		cfg, err := clientcmd.LoadFromFile(c.KubeConfig)
		if err != nil {
			t.Fatal(err)
		}
		for _, cl := range cfg.Clusters {
			cl.Server = "https://127.0.0.1:1"
		}
		f := t.TempDir() + "/kubeconfig"
		if err := clientcmd.WriteToFile(*cfg, f); err != nil {
			t.Fatal(err)
		}
		_, err = kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: f})
		if !errors.Is(err, meadowrun.ErrUnreachable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
	})
	t.Run("a user without rights", func(t *testing.T) {
		_, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: c.NobodyKubeConfig, Namespace: c.Namespace})
		if !errors.Is(err, meadowrun.ErrAuth) || !strings.Contains(err.Error(), "pods") || !strings.Contains(err.Error(), "list") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
	})
	h := newK8s(t, c, kubernetes.Options{})
	t.Run("resources no node has", func(t *testing.T) {
		k8sErr(t, h, &meadowrun.Options{Resources: &meadowrun.Resources{LogicalCPU: 64}}, meadowrun.ErrNeverFits, "node "+c.Node, "cpu")
	})
	t.Run("more GPUs than a node has", func(t *testing.T) {
		k8sErr(t, h, &meadowrun.Options{Resources: &meadowrun.Resources{LogicalCPU: 0.1, GPUs: 16}}, meadowrun.ErrNeverFits, "nvidia.com/gpu")
	})
	t.Run("an image that cannot be pulled", func(t *testing.T) {
		hi := newK8s(t, c, kubernetes.Options{Image: "localhost:1/meadowrun/no-such-image:v1"})
		start := time.Now()
		k8sErr(t, hi, nil, meadowrun.ErrImageNotFound, "localhost:1/meadowrun/no-such-image:v1")
		if d := time.Since(start); d > 60*time.Second {
			t.Fatalf("the pull failure took %v to report", d)
		}
	})
}

func TestKubernetesGPURequestsAreScheduled(t *testing.T) {
	c := k8stest.Require(t)
	if c.FakeGPUs == 0 {
		t.Skip("the node advertises no GPUs")
	}
	h := newK8s(t, c, kubernetes.Options{})
	got, err := meadowrun.RunFunction(context.Background(), k8sWhere.With(1), h,
		&meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{LogicalCPU: 0.1, GPUs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := client(t, c).CoreV1().Pods(c.Namespace).Get(context.Background(), got, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := p.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]
	if lim.Value() != 1 {
		t.Fatalf("pod %s has GPU limit %v, want 1", got, lim.String())
	}
}

func TestKubernetesSingleUsePodsAreRemoved(t *testing.T) {
	c := k8stest.Require(t)
	h := newK8s(t, c, kubernetes.Options{SingleUsePods: true})
	got, err := meadowrun.RunFunction(context.Background(), k8sWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	cs := client(t, c)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := cs.CoreV1().Pods(c.Namespace).Get(context.Background(), got, metav1.GetOptions{})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s still there a minute after Close", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var k8sHog = meadowrun.Register("k8s.Hog", func(ctx context.Context, mb int) (int, error) {
	// mb MiB of anonymous memory faulted in by the kernel in one call
	// (MAP_POPULATE), far faster than the agent's watchdog samples: the
	// pod's own limit, which the kubelet sets a little above the
	// worker's, is what stops it, by the kernel's OOM killer.
	b, err := syscall.Mmap(-1, 0, mb<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_POPULATE)
	if err != nil {
		return 0, err
	}
	defer syscall.Munmap(b)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return len(b) >> 20, nil
})

func TestKubernetesPodMemoryLimitKillsAreOOM(t *testing.T) {
	c := k8stest.Require(t)
	h := newK8s(t, c, kubernetes.Options{})
	ctx := context.Background()
	t.Run("a worker killed by the kernel at the pod's limit fails with KindOOM", func(t *testing.T) {
		_, err := meadowrun.RunFunction(ctx, k8sHog.With(1024), h,
			&meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{MemoryGB: 0.0625}})
		var te *meadowrun.TaskError
		if !errors.As(err, &te) || te.Kind != meadowrun.KindOOM || te.LimitBytes != 64<<20 {
			t.Fatalf("error = %v, want KindOOM with a 64 MiB limit", err)
		}
		// Which of the two killed it depends on where the agent's watchdog
		// samples fall: the kernel, at the pod's limit, most often.
		t.Logf("%v (peak seen by the watchdog %d MiB)", err, te.PeakMemoryBytes>>20)
	})
	t.Run("retries with more memory run in pods with higher limits", func(t *testing.T) {
		// The pods made for the attempts, seen as they are created: a pod
		// of an earlier attempt may be gone by the end, removed to make
		// room for the next one.
		seen := watchPodMemoryLimits(t, c)
		// 300 MiB: over 128 MiB (attempt 1) and 256 MiB (attempt 2),
		// within 384 MiB (attempt 3).
		var rs []meadowrun.TaskResult[int]
		for r := range meadowrun.RunMapAsCompleted(ctx, k8sHog, []int{300}, h, &meadowrun.MapOptions{
			Options:     meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{MemoryGB: 0.125}},
			MaxAttempts: 3, RetryWithMoreMemory: true}) {
			rs = append(rs, r)
		}
		// Attempt 3 at the earliest: an attempt whose worker was lost
		// rather than killed for memory (seen once on a loaded machine:
		// "the machine was lost") runs again with the same memory.
		if len(rs) != 1 || rs[0].Err != nil || rs[0].Value != 300 || rs[0].Attempt < 3 {
			t.Fatalf("results %+v: want success on attempt 3 or later, with three times the memory", rs)
		}
		limits := seen()
		// The worker's limit and 64 MiB for the agent.
		for _, want := range []int64{128 + 64, 256 + 64, 384 + 64} {
			if !limits[want] {
				t.Errorf("no pod with a memory limit of %d MiB (pods have %v)", want, limits)
			}
		}
	})
}

// watchPodMemoryLimits records the memory limits (MiB) of the managed pods
// that exist or are created until the function it returns is called,
// which returns them. A watch the API server ends is resumed.
func watchPodMemoryLimits(t *testing.T, c k8stest.Cluster) func() map[int64]bool {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pods := client(t, c).CoreV1().Pods(c.Namespace)
	sel := "meadowrun.dev/managed=true"
	var mu sync.Mutex
	limits := map[int64]bool{}
	add := func(p *corev1.Pod) {
		if q, ok := p.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; ok {
			mu.Lock()
			limits[q.Value()>>20] = true
			mu.Unlock()
		}
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		first := true
		for ctx.Err() == nil {
			l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err == nil {
				for i := range l.Items {
					add(&l.Items[i])
				}
				var w watch.Interface
				w, err = pods.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: l.ResourceVersion})
				if err == nil {
					if first {
						first = false
						close(ready)
					}
					for ev := range w.ResultChan() {
						if p, ok := ev.Object.(*corev1.Pod); ok {
							add(p)
						}
					}
					w.Stop()
				}
			}
			if err != nil && ctx.Err() == nil {
				if first {
					// The test goes on; pods are seen from the next try.
					first = false
					close(ready)
				}
				t.Logf("watching pods: %v", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
		if first {
			close(ready)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	<-ready
	return func() map[int64]bool {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return limits
	}
}

// The suite with Python workers: pods of the Python image (the base
// image and Debian's python3) run meadowrun's Python worker.
func TestConformanceKubernetesPython(t *testing.T) {
	c := k8stest.Require(t)
	if c.PythonImage == "" {
		t.Fatal("the cluster has no Python image (PYTHON_IMAGE in k8s.env): restart it with the current scripts/k8s.sh")
	}
	hosttest.Run(t, hosttest.Config{
		NewHost: func(t *testing.T) *meadowrun.Host {
			return newK8s(t, c, kubernetes.Options{Image: c.PythonImage, ContainerMounts: []string{os.TempDir() + ":" + os.TempDir()}})
		},
		MillionTasks: millionTasks / 10,
		Deployment:   meadowrun.PreinstalledInterpreter("python3", nil),
		Python:       true,
	})
}

// A container deployment's image is the pod's: a command runs with the
// image's python3, and a Go function of this program runs in it too.
func TestKubernetesContainerDeployment(t *testing.T) {
	c := k8stest.Require(t)
	if c.PythonImage == "" {
		t.Fatal("the cluster has no Python image (PYTHON_IMAGE in k8s.env): restart it with the current scripts/k8s.sh")
	}
	repo, tag, _ := strings.Cut(c.PythonImage, ":v")
	tag = "v" + tag
	h := newK8s(t, c, kubernetes.Options{})
	ctx := context.Background()
	out := &hosttest.SyncBuffer{}
	d := meadowrun.ContainerImage(repo, tag, meadowrun.Secret{}, map[string]string{"GREETING": "hello"})
	jc, err := meadowrun.RunCommand(ctx, []string{"python3", "-c", "import os, sys; print(os.environ['GREETING'], sys.version_info[:2])"}, h,
		&meadowrun.CommandOptions{Options: meadowrun.Options{Deployment: d, LogDir: t.TempDir(), Output: out}})
	if err != nil || jc.ReturnCode != 0 {
		t.Fatalf("%+v, %v; output %q", jc, err, out)
	}
	if !strings.Contains(out.String(), "hello (3, ") {
		t.Fatalf("output %q, want the image's python3 and the deployment's environment", out)
	}
	where, err := meadowrun.RunFunction(ctx, k8sWhere.With(1), h, &meadowrun.Options{Deployment: d, LogDir: t.TempDir()})
	if err != nil || !strings.HasPrefix(where, "meadowrun-") {
		t.Fatalf("a Go function in the image's pod: %q, %v", where, err)
	}
}
