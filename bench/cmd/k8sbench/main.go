// Command k8sbench measures meadowrun's Kubernetes host (P8) on the
// single-node cluster of scripts/k8s.sh (MEADOWRUN_K8S names its
// directory): the time from a worker pod being Running to the first
// result, warm dispatch of a trivial function to a reusable pod next to the
// TCP round trip to the API server, and a map of trivial tasks over four
// reusable pods.
//
//	scripts/k8s.sh up DIR && MEADOWRUN_K8S=DIR go run ./bench/cmd/k8sbench [-quick]
package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/bench/internal/benchmain"
	"github.com/meadowrun-go/meadowrun/internal/envfile"
	"github.com/meadowrun-go/meadowrun/internal/k8shost"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

var inc = meadowrun.Register("k8sbench.Inc", func(ctx context.Context, x int) (int, error) {
	return x + 1, nil
})

// runLabel is the label of the pods of one run.
const runLabel = "meadowrun.dev/k8sbench-run"

func main() { benchmain.Main("k8sbench", run) }

func run(quick bool) error {
	dir := os.Getenv("MEADOWRUN_K8S")
	if dir == "" {
		return fmt.Errorf("MEADOWRUN_K8S is not set: start the cluster with scripts/k8s.sh up DIR")
	}
	kv, err := envfile.Read(filepath.Join(dir, "k8s.env"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	cfg, err := clientcmd.BuildConfigFromFlags("", kv["KUBECONFIG"])
	if err != nil {
		return err
	}
	cs, err := k8s.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns := kv["NAMESPACE"]
	// A label of this run's own makes its pods a spec of their own: the
	// cold call always starts a new pod (never one a run before left
	// idle), and the run removes its pods when it ends.
	run := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	h, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: kv["KUBECONFIG"], Namespace: ns, Image: kv["IMAGE"],
		IdleTimeout: time.Minute, Log: io.Discard, PodCustomization: func(p *corev1.Pod) error {
			p.Labels[runLabel] = run
			return nil
		}})
	if err != nil {
		return err
	}
	defer func() {
		h.Close()
		bg := metav1.DeletePropagationBackground
		cs.BatchV1().Jobs(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{PropagationPolicy: &bg},
			metav1.ListOptions{LabelSelector: runLabel + "=" + run})
	}()
	o := &meadowrun.Options{Output: io.Discard, LogDir: os.TempDir()}

	// Cold: from the worker pod being Running to the first result. A
	// watch of this run's pods gives the moment the API server had the
	// pod Running; the kubelet's time of its container's start is in whole
	// seconds (RFC 3339), too coarse for this, and is shown beside it.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	type seen struct{ at, started time.Time }
	running := make(chan seen, 1)
	go func() {
		// A watch the API server ends (its cache behind: "Too large
		// resource version") is started again.
		for wctx.Err() == nil {
			w, err := cs.CoreV1().Pods(ns).Watch(wctx, metav1.ListOptions{LabelSelector: runLabel + "=" + run})
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok || p.Status.Phase != corev1.PodRunning {
					continue
				}
				s := seen{at: time.Now()}
				for _, c := range p.Status.ContainerStatuses {
					if c.State.Running != nil {
						s.started = c.State.Running.StartedAt.Time
					}
				}
				running <- s
				w.Stop()
				return
			}
			w.Stop()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	start := time.Now()
	if _, err := meadowrun.RunFunction(ctx, inc.With(1), h, o); err != nil {
		return err
	}
	done := time.Now()
	stopWatch()
	select {
	case s := <-running:
		fmt.Printf("cold call: %v from the call to the first result; %v from the pod Running (seen on a watch) to the first result (%v from its container's start as the kubelet reports it, in whole seconds)\n",
			done.Sub(start).Round(time.Millisecond), done.Sub(s.at).Round(time.Millisecond), done.Sub(s.started).Round(time.Millisecond))
	default:
		fmt.Printf("cold call: %v from the call to the first result (no new pod seen)\n", done.Sub(start).Round(time.Millisecond))
	}

	// Warm dispatch to the reusable pod, next to the API server's round
	// trip.
	calls := 1000
	if quick {
		calls = 50
	}
	var lat []time.Duration
	for i := range calls {
		t := time.Now()
		if _, err := meadowrun.RunFunction(ctx, inc.With(i), h, o); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	u, err := url.Parse(kv["SERVER"])
	if err != nil {
		return err
	}
	rtt := benchmain.DialTimes(u.Host, 50, 5*time.Millisecond)
	slices.Sort(lat)
	if len(rtt) == 0 {
		return fmt.Errorf("the API server at %s could not be dialled", u.Host)
	}
	fmt.Printf("warm dispatch to a reusable pod: p50 %v, p90 %v, p99 %v over %d calls; TCP connect to the API server p50 %v\n",
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*9/10].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond),
		calls, rtt[len(rtt)/2].Round(time.Microsecond))

	// A map over four reusable pods: a quarter CPU each, warmed first.
	size := 10_000
	if quick {
		size = 500
	}
	mo := &meadowrun.MapOptions{Options: *o, Concurrency: 4}
	mo.Resources = &meadowrun.Resources{LogicalCPU: 0.25}
	args := make([]int, size)
	if _, err := meadowrun.RunMap(ctx, inc, args[:100], h, mo); err != nil {
		return err
	}
	t := time.Now()
	if _, err := meadowrun.RunMap(ctx, inc, args, h, mo); err != nil {
		return err
	}
	d := time.Since(t)
	after, err := managedPods(ctx, cs, ns)
	if err != nil {
		return err
	}
	fmt.Printf("map of x+1 over 4 workers in reusable pods (%d meadowrun pods in the namespace): %d tasks in %v = %.0f tasks/s\n",
		len(after), size, d.Round(time.Millisecond), float64(size)/d.Seconds())
	return nil
}

// managedPods names the pods meadowrun has in ns.
func managedPods(ctx context.Context, cs k8s.Interface, ns string) (map[string]bool, error) {
	ps, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: k8shost.LabelManaged + "=true"})
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, p := range ps.Items {
		names[p.Name] = true
	}
	return names, nil
}
