package kubernetes_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/cli"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

// small is the size of these tests' workers: the test node has 2 CPUs,
// shared with other tests.
var small = &meadowrun.Resources{LogicalCPU: 0.2}

// testLabel is on the pods of the tests in this file (PodCustomization),
// so that they look only at their own pods: the test cluster is shared.
const testLabel = "meadowrun-test/run"

// ownPods opens a host whose pods carry a label of their own, and returns
// it with the label's selector.
func ownPods(t *testing.T, c k8stest.Cluster, opts kubernetes.Options) (*meadowrun.Host, string) {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	id := hex.EncodeToString(b)
	opts.PodCustomization = func(p *corev1.Pod) error {
		p.Labels[testLabel] = id
		return nil
	}
	return newK8s(t, c, opts), testLabel + "=" + id
}

func listPods(t *testing.T, cs k8s.Interface, c k8stest.Cluster, sel string) []corev1.Pod {
	t.Helper()
	l, err := cs.CoreV1().Pods(c.Namespace).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// k8sDial reads what the HTTP server at addr serves at "/", retrying
// while it does not answer yet (a sidecar may still be starting).
var k8sDial = meadowrun.Register("k8s.Dial", func(ctx context.Context, addr string) (string, error) {
	var last error
	for range 300 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
		b, err := io.ReadAll(c)
		if err != nil {
			return "", err
		}
		_, body, _ := strings.Cut(string(b), "\r\n\r\n")
		return strings.TrimSpace(body), nil
	}
	return "", last
})

// A sidecar is a native sidecar container of the worker's pod, reachable
// from the task on localhost and by its names; one that exits at once
// fails the job with its exit code and output.
func TestKubernetesSidecars(t *testing.T) {
	c := k8stest.Require(t)
	h, sel := ownPods(t, c, kubernetes.Options{})
	serve := "mkdir -p /www && echo hello from the sidecar > /www/index.html && exec httpd -f -p 7071 -h /www"
	base, tag, _ := strings.Cut(c.Image, ":")
	o := meadowrun.Options{LogDir: t.TempDir(), Resources: small, Sidecars: []meadowrun.Container{{Repository: base, Tag: tag, Name: "greeter",
		Args: []string{"sh", "-c", serve}}}}
	for _, addr := range []string{"localhost:7071", "greeter:7071", "meadowrun-sidecar-0:7071"} {
		got, err := meadowrun.RunFunction(context.Background(), k8sDial.With(addr), h, &o)
		if err != nil || got != "hello from the sidecar" {
			t.Fatalf("dialing the sidecar at %s: %q, %v", addr, got, err)
		}
	}
	pods := listPods(t, client(t, c), c, sel)
	if len(pods) != 1 {
		// The three calls share a reusable pod with the same sidecar.
		t.Errorf("%d pods, want the one reusable pod", len(pods))
	}
	for _, p := range pods {
		if len(p.Spec.InitContainers) != 1 || p.Spec.InitContainers[0].RestartPolicy == nil ||
			*p.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("pod %s: init containers %+v, want one native sidecar", p.Name, p.Spec.InitContainers)
		}
	}
	o.Sidecars[0].Args = []string{"sh", "-c", "echo sidecar-says-goodbye; exit 3"}
	_, err := meadowrun.RunFunction(context.Background(), k8sDial.With("localhost:7071"), h, &o)
	if !errors.Is(err, meadowrun.ErrSidecarExited) || !strings.Contains(err.Error(), "sidecar-says-goodbye") ||
		!strings.Contains(err.Error(), "exit code 3") {
		t.Fatalf("a sidecar that exits at once: error = %v, want ErrSidecarExited with its code and output", err)
	}
	t.Log(err)
}

// A sidecar that stops while a task runs (the kubelet restarts it) fails
// the task with ErrSidecarExited, its exit code and the end of its log.
func TestKubernetesSidecarStoppingMidTask(t *testing.T) {
	c := k8stest.Require(t)
	h, _ := ownPods(t, c, kubernetes.Options{})
	base, tag, _ := strings.Cut(c.Image, ":")
	o := meadowrun.Options{LogDir: t.TempDir(), Resources: small, Sidecars: []meadowrun.Container{{Repository: base, Tag: tag, Name: "brief",
		Args: []string{"sh", "-c", "echo sidecar-is-up; sleep 5; echo sidecar-leaves-mid-task; exit 7"}}}}
	got, err := meadowrun.RunFunction(context.Background(), k8sSleep.With(40), h, &o)
	if !errors.Is(err, meadowrun.ErrSidecarExited) || !strings.Contains(err.Error(), "exit code 7") ||
		!strings.Contains(err.Error(), "sidecar-leaves-mid-task") || !strings.Contains(err.Error(), "sidecar-0") {
		t.Fatalf("a sidecar that exits mid-task: %v, %v; want ErrSidecarExited naming it, with its exit code and output", got, err)
	}
	var te *meadowrun.TaskError
	if !errors.As(err, &te) {
		t.Fatalf("%v: not a *TaskError", err)
	}
	t.Log(err)
}

// k8sServe listens on port, tells each client "hello from the task" and
// returns once one answers "bye".
var k8sServe = meadowrun.Register("k8s.Serve", func(ctx context.Context, port int) (string, error) {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return "", err
	}
	defer l.Close()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Minute))
	for {
		c, err := l.Accept()
		if err != nil {
			return "", err
		}
		fmt.Fprintln(c, "hello from the task")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if strings.TrimSpace(line) == "bye" {
			return "served", nil
		}
	}
})

// A job's ports are host ports of its pod: they answer on the node's
// address while the job runs, and are gone with the pod after it.
func TestKubernetesPortsAreTheJobs(t *testing.T) {
	c := k8stest.Require(t)
	h, sel := ownPods(t, c, kubernetes.Options{})
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr := net.JoinHostPort(nodeIP(t, c), strconv.Itoa(port))
	type res struct {
		v   string
		err error
	}
	done := make(chan res, 1)
	go func() {
		v, err := meadowrun.RunFunction(context.Background(), k8sServe.With(port), h,
			&meadowrun.Options{LogDir: t.TempDir(), Resources: small, Ports: []string{strconv.Itoa(port)}})
		done <- res{v, err}
	}()
	// The port answers once the pod runs and the task listens.
	var hello string
	for deadline := time.Now().Add(3 * time.Minute); ; {
		select {
		case r := <-done:
			t.Fatalf("the job ended before its port answered: %q, %v", r.v, r.err)
		default:
		}
		if conn, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			hello, _ = bufio.NewReader(conn).ReadString('\n')
			if strings.TrimSpace(hello) == "hello from the task" {
				fmt.Fprintln(conn, "bye")
				conn.Close()
				break
			}
			conn.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %s never answered during the job (last: %q)", addr, hello)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := <-done
	if r.err != nil || r.v != "served" {
		t.Fatalf("job: %q, %v", r.v, r.err)
	}
	// After the job its pod goes, and the port with it.
	for deadline := time.Now().Add(time.Minute); ; {
		pods := listPods(t, client(t, c), c, sel)
		if len(pods) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s of a job with ports still there a minute after the job", pods[0].Name)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if conn, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		b, _ := io.ReadAll(conn)
		conn.Close()
		if len(b) > 0 {
			t.Fatalf("port %s still answers after the job: %q", addr, b)
		}
	}
}

var k8sProcs = meadowrun.Register("k8s.Procs", func(ctx context.Context, x int) (int, error) {
	return runtime.GOMAXPROCS(0), nil
})

var k8sHold = meadowrun.Register("k8s.Hold", func(ctx context.Context, ms int) (string, error) {
	h, _ := os.Hostname()
	fmt.Println("holding", h)
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return h, nil
})

// A worker's CPUs are a request without a limit: the pod may use idle
// CPUs, and the worker's Go runtime and the pod's agent see the request
// (Downward API), not the node's CPUs.
func TestKubernetesCPUIsARequest(t *testing.T) {
	c := k8stest.Require(t)
	cs := client(t, c)
	n, err := cs.CoreV1().Nodes().Get(context.Background(), c.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Status.Capacity.Cpu().Value() < 2 {
		t.Skipf("node %s has %s CPUs: GOMAXPROCS 1 would prove nothing", c.Node, n.Status.Capacity.Cpu())
	}
	h, sel := ownPods(t, c, kubernetes.Options{})
	o := meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{LogicalCPU: 0.5}}
	procs, err := meadowrun.RunFunction(context.Background(), k8sProcs.With(0), h, &o)
	if err != nil {
		t.Fatal(err)
	}
	if procs != 1 {
		t.Errorf("GOMAXPROCS %d in a pod requesting 0.5 CPU on a node of %s, want 1", procs, n.Status.Capacity.Cpu())
	}
	pods := listPods(t, cs, c, sel)
	if len(pods) != 1 {
		t.Fatalf("%d pods", len(pods))
	}
	first := pods[0].Name
	r := pods[0].Spec.Containers[0].Resources
	if q := r.Requests[corev1.ResourceCPU]; q.MilliValue() != 500 {
		t.Errorf("cpu request %s, want 500m", q.String())
	}
	if q, ok := r.Limits[corev1.ResourceCPU]; ok {
		t.Errorf("cpu limit %s, want none", q.String())
	}
	// The agent's capacity is the request: a second worker does not go to
	// the pod while its first one runs (the node's 2 CPUs would hold it).
	out := &hosttest.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := make(chan error, 1)
	go func() {
		_, err := meadowrun.RunFunction(ctx, k8sHold.With(120000), h, &meadowrun.Options{LogDir: t.TempDir(), Output: out, Resources: o.Resources})
		held <- err
	}()
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(out.String(), "holding "+first); {
		if time.Now().After(deadline) {
			t.Fatalf("the holding task did not start in pod %s: %q", first, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	second, err := meadowrun.RunFunction(context.Background(), k8sHold.With(0), h, &meadowrun.Options{LogDir: t.TempDir(), Resources: o.Resources})
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Errorf("a second 0.5-CPU worker ran in pod %s while its first one did: the agent offers more than the pod's request", first)
	}
	cancel()
	<-held
}

// patchNode applies a JSON patch to the test node, and undoes it with
// undo at the end of the test.
func patchNode(t *testing.T, cs k8s.Interface, node, patch, undo string) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching node %s with %s: %v", node, patch, err)
	}
	t.Cleanup(func() {
		if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.JSONPatchType, []byte(undo), metav1.PatchOptions{}); err != nil {
			t.Errorf("restoring node %s with %s: %v", node, undo, err)
		}
	})
}

// On-demand workers (OnDemandOnly) never go to a node labelled spot;
// others tolerate the spot taint and run there.
func TestKubernetesEvictionRateSelectsNodes(t *testing.T) {
	c := k8stest.Require(t)
	cs := client(t, c)
	const key = "meadowrun-test.example/spot"
	h, sel := ownPods(t, c, kubernetes.Options{SpotNodeLabels: map[string]string{key: "true"},
		SpotTaints: []corev1.Taint{{Key: key, Value: "true", Effect: corev1.TaintEffectNoSchedule}}})
	esc := strings.ReplaceAll(key, "/", "~1")
	patchNode(t, cs, c.Node, `[{"op":"add","path":"/metadata/labels/`+esc+`","value":"true"}]`, `[{"op":"remove","path":"/metadata/labels/`+esc+`"}]`)
	_, err := meadowrun.RunFunction(context.Background(), k8sWhere.With(1), h,
		&meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{LogicalCPU: 0.1, OnDemandOnly: true}})
	if !errors.Is(err, meadowrun.ErrNeverFits) || !strings.Contains(err.Error(), key) {
		t.Fatalf("an on-demand worker where every node is spot: %v, want ErrNeverFits naming %s", err, key)
	}
	t.Log(err)

	// The taint, for as short a time as the pod takes to be scheduled:
	// the cluster is shared.
	n, err := cs.CoreV1().Nodes().Get(context.Background(), c.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	taints := append(n.Spec.Taints, corev1.Taint{Key: key, Value: "true", Effect: corev1.TaintEffectNoSchedule})
	with, _ := json.Marshal(map[string]any{"spec": map[string]any{"taints": taints}})
	without, _ := json.Marshal(map[string]any{"spec": map[string]any{"taints": n.Spec.Taints}})
	if len(n.Spec.Taints) == 0 {
		without = []byte(`{"spec":{"taints":null}}`)
	}
	untaint := func() {
		if _, err := cs.CoreV1().Nodes().Patch(context.Background(), c.Node, types.MergePatchType, without, metav1.PatchOptions{}); err != nil {
			t.Errorf("removing the taint: %v", err)
		}
	}
	if _, err := cs.CoreV1().Nodes().Patch(context.Background(), c.Node, types.MergePatchType, with, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(untaint)
	got, err := meadowrun.RunFunction(context.Background(), k8sWhere.With(1), h,
		&meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{LogicalCPU: 0.1}})
	untaint()
	if err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods(c.Namespace).Get(context.Background(), got, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Labels[strings.Split(sel, "=")[0]] == "" {
		t.Fatalf("the task ran in pod %s, not one of this test's", got)
	}
	tolerates := false
	for _, tol := range p.Spec.Tolerations {
		tolerates = tolerates || (tol.Key == key && tol.Value == "true")
	}
	if !tolerates || p.Spec.NodeName != c.Node {
		t.Fatalf("pod %s on node %q tolerates %+v", got, p.Spec.NodeName, p.Spec.Tolerations)
	}
}

// `meadowrun hosts --host k8s://...` describes the nodes: allocatable
// CPUs and memory, the (fake) GPUs, labels.
func TestKubernetesHostsDescribesNodes(t *testing.T) {
	c := k8stest.Require(t)
	u := "k8s://" + c.Context + "?namespace=" + c.Namespace + "&kubeconfig=" + c.KubeConfig + "&image=" + c.Image
	var out, errb bytes.Buffer
	code := cli.Main(context.Background(), []string{"hosts", "--host", u}, strings.NewReader(""), &out, &errb)
	t.Logf("%s%s", out.String(), errb.String())
	if code != 0 {
		t.Fatalf("exit code %d: %s", code, errb.String())
	}
	n, err := client(t, c).CoreV1().Nodes().Get(context.Background(), c.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	var row string
	for _, l := range lines {
		if strings.HasPrefix(l, c.Node+" ") {
			row = l
			break
		}
	}
	f := strings.Fields(row)
	if len(f) < 5 || f[1] != "linux/amd64" || f[2] != strconv.FormatFloat(float64(n.Status.Allocatable.Cpu().MilliValue())/1000, 'g', -1, 64) {
		t.Fatalf("no row for node %s with its platform and allocatable CPUs (%s) in:\n%s", c.Node, n.Status.Allocatable.Cpu(), out.String())
	}
	if c.FakeGPUs > 0 && f[4] != strconv.Itoa(c.FakeGPUs) {
		t.Errorf("node %s shows %s GPUs, want %d", c.Node, f[4], c.FakeGPUs)
	}
	if !strings.Contains(out.String(), c.Node+" labels: ") || !strings.Contains(out.String(), "kubernetes.io/hostname="+n.Labels["kubernetes.io/hostname"]) {
		t.Errorf("no labels of node %s in:\n%s", c.Node, out.String())
	}
	out.Reset()
	if code := cli.Main(context.Background(), []string{"hosts", "--json", "--host", u}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("--json: exit code %d: %s", code, errb.String())
	}
	var ms []meadowrun.MachineInfo
	if err := json.Unmarshal(out.Bytes(), &ms); err != nil {
		t.Fatalf("--json: %v: %s", err, out.String())
	}
	found := false
	for _, m := range ms {
		if m.Name == c.Node {
			found = true
			if m.Labels["kubernetes.io/os"] != "linux" || m.MemoryGB <= 0 || len(m.GPUs) != c.FakeGPUs {
				t.Errorf("node %s: %+v", c.Node, m)
			}
		}
	}
	if !found {
		t.Errorf("--json lacks node %s: %s", c.Node, out.String())
	}
}
