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
	h, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: kv["KUBECONFIG"], Namespace: ns, Image: kv["IMAGE"],
		IdleTimeout: time.Minute, Log: io.Discard})
	if err != nil {
		return err
	}
	defer h.Close()
	o := &meadowrun.Options{Output: io.Discard, LogDir: os.TempDir()}

	// Cold: from the worker pod being Running to the first result.
	before, err := managedPods(ctx, cs, ns)
	if err != nil {
		return err
	}
	running := make(chan time.Time, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			ps, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: k8shost.LabelManaged + "=true"})
			if err != nil {
				continue
			}
			for _, p := range ps.Items {
				if !before[p.Name] && p.Status.Phase == corev1.PodRunning {
					// The kubelet's own time of the container start, not
					// when this poll noticed it.
					at := time.Now()
					for _, c := range p.Status.ContainerStatuses {
						if c.State.Running != nil {
							at = c.State.Running.StartedAt.Time
						}
					}
					running <- at
					return
				}
			}
		}
	}()
	start := time.Now()
	if _, err := meadowrun.RunFunction(ctx, inc.With(1), h, o); err != nil {
		return err
	}
	done := time.Now()
	close(stop)
	select {
	case at := <-running:
		fmt.Printf("cold call: %v from the call to the first result; %v from the pod Running (its container's start) to the first result\n",
			done.Sub(start).Round(time.Millisecond), done.Sub(at).Round(time.Millisecond))
	default:
		fmt.Printf("cold call: %v from the call to the first result (no new pod seen: a reusable one was there)\n", done.Sub(start).Round(time.Millisecond))
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
