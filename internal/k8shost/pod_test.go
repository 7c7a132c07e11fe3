package k8shost

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// The pod spec is built without a cluster: these tests look at what would
// be created. Tests against a real cluster are in package kubernetes.

func testHost(o Options) *Host {
	o.Image = "img"
	o.ReusablePods = !o.SingleUsePods
	return &Host{opts: o, owner: "test"}
}

func nodeRequirements(p *corev1.Pod) []corev1.NodeSelectorRequirement {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return nil
	}
	var out []corev1.NodeSelectorRequirement
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		out = append(out, t.MatchExpressions...)
	}
	return out
}

func hasRequirement(rs []corev1.NodeSelectorRequirement, key string, op corev1.NodeSelectorOperator, values ...string) bool {
	return slices.ContainsFunc(rs, func(r corev1.NodeSelectorRequirement) bool {
		return r.Key == key && r.Operator == op && slices.Equal(r.Values, values)
	})
}

func hasToleration(ts []corev1.Toleration, key, value string) bool {
	return slices.ContainsFunc(ts, func(t corev1.Toleration) bool { return t.Key == key && t.Value == value })
}

func TestEvictionRateSelectsNodes(t *testing.T) {
	custom := Options{SpotNodeLabels: map[string]string{"pool/spot": "", "capacity": "interruptible"},
		SpotTaints: []corev1.Taint{{Key: "spot", Effect: corev1.TaintEffectNoSchedule}, {Key: "pool", Value: "cheap", Effect: corev1.TaintEffectNoExecute}}}
	for _, tc := range []struct {
		name  string
		opts  Options
		rate  float64
		check func(t *testing.T, rs []corev1.NodeSelectorRequirement, ts []corev1.Toleration)
	}{
		{"rate 0 keeps pods off the spot nodes of EKS, GKE and AKS", Options{}, 0, func(t *testing.T, rs []corev1.NodeSelectorRequirement, ts []corev1.Toleration) {
			for k, v := range DefaultSpotNodeLabels {
				if !hasRequirement(rs, k, corev1.NodeSelectorOpNotIn, v) {
					t.Errorf("no requirement %s NotIn %s in %+v", k, v, rs)
				}
			}
			if len(ts) != 0 {
				t.Errorf("tolerations %+v: an on-demand pod tolerates no spot taint", ts)
			}
		}},
		{"a positive rate tolerates the spot taints and excludes no node", Options{}, 80, func(t *testing.T, rs []corev1.NodeSelectorRequirement, ts []corev1.Toleration) {
			if len(rs) != 0 {
				t.Errorf("requirements %+v, want none", rs)
			}
			if !hasToleration(ts, "kubernetes.azure.com/scalesetpriority", "spot") || !hasToleration(ts, "cloud.google.com/gke-spot", "true") {
				t.Errorf("tolerations %+v lack the AKS or GKE spot taint", ts)
			}
		}},
		{"custom labels: a label without a value must be absent", custom, 0, func(t *testing.T, rs []corev1.NodeSelectorRequirement, ts []corev1.Toleration) {
			if len(rs) != 2 || !hasRequirement(rs, "pool/spot", corev1.NodeSelectorOpDoesNotExist) || !hasRequirement(rs, "capacity", corev1.NodeSelectorOpNotIn, "interruptible") {
				t.Errorf("requirements %+v", rs)
			}
		}},
		{"custom taints: a taint without a value is tolerated whatever its value", custom, 5, func(t *testing.T, rs []corev1.NodeSelectorRequirement, ts []corev1.Toleration) {
			want := []corev1.Toleration{{Key: "spot", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
				{Key: "pool", Operator: corev1.TolerationOpEqual, Value: "cheap", Effect: corev1.TaintEffectNoExecute}}
			if !slices.Equal(ts, want) {
				t.Errorf("tolerations %+v, want %+v", ts, want)
			}
		}},
		{"empty mappings turn it off", Options{SpotNodeLabels: map[string]string{}, SpotTaints: []corev1.Taint{}}, 0, func(t *testing.T, rs []corev1.NodeSelectorRequirement, ts []corev1.Toleration) {
			if len(rs)+len(ts) != 0 {
				t.Errorf("requirements %+v, tolerations %+v, want none", rs, ts)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _, err := testHost(tc.opts).podSpec(driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1, MaxEvictionRate: tc.rate}})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, nodeRequirements(p), p.Spec.Tolerations)
		})
	}
	h := testHost(Options{})
	_, k0, _ := h.podSpec(driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1}})
	_, k80, _ := h.podSpec(driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1, MaxEvictionRate: 80}})
	if k0 == k80 {
		t.Errorf("pods for rates 0 and 80 share the key %s", k0)
	}
}

func TestFlagsRequireNodeLabels(t *testing.T) {
	h := testHost(Options{FlagLabels: map[string]string{"a100": "gpu.example.com/a100"}})
	p, _, err := h.podSpec(driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1, MaxEvictionRate: 80, Flags: []string{"a100", "avx512"}}})
	if err != nil {
		t.Fatal(err)
	}
	rs := nodeRequirements(p)
	if !hasRequirement(rs, "gpu.example.com/a100", corev1.NodeSelectorOpExists) || !hasRequirement(rs, "meadowrun.dev/avx512", corev1.NodeSelectorOpExists) || len(rs) != 2 {
		t.Errorf("requirements %+v", rs)
	}
}

func TestCPUIsARequestGivenToTheWorker(t *testing.T) {
	p, _, err := testHost(Options{}).podSpec(driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1.5, MemoryBytes: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	c := p.Spec.Containers[0]
	if q := c.Resources.Requests[corev1.ResourceCPU]; q.MilliValue() != 1500 {
		t.Errorf("cpu request %s, want 1500m", q.String())
	}
	if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		t.Errorf("cpu limit %v: want none (no CFS throttling)", c.Resources.Limits)
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("memory has no limit: %v", c.Resources.Limits)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for name, divisor := range map[string]string{agentproto.EnvMilliCPUs: "1m", "GOMAXPROCS": "1"} {
		e, ok := env[name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil {
			t.Fatalf("no Downward API variable %s in %+v", name, c.Env)
		}
		r := e.ValueFrom.ResourceFieldRef
		if r.Resource != "requests.cpu" || r.ContainerName != containerName || r.Divisor.String() != divisor {
			t.Errorf("%s from %+v, want requests.cpu of %s divided by %s", name, r, containerName, divisor)
		}
	}
}

func TestSidecarsAreNativeSidecarContainers(t *testing.T) {
	h := testHost(Options{})
	spec := driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1}, Sidecars: []driver.Container{
		{Name: "redis", Image: "redis:7", Args: []string{"--port", "7000"}, Env: map[string]string{"B": "2", "A": "1"}},
		{Image: "busybox:1"},
	}}
	p, key, err := h.podSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.InitContainers) != 2 {
		t.Fatalf("init containers %+v, want the 2 sidecars", p.Spec.InitContainers)
	}
	for i, c := range p.Spec.InitContainers {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("sidecar %d: restart policy %v, want Always (a native sidecar)", i, c.RestartPolicy)
		}
		if c.Image != spec.Sidecars[i].Image || !slices.Equal(c.Args, spec.Sidecars[i].Args) {
			t.Errorf("sidecar %d: image %s args %v", i, c.Image, c.Args)
		}
	}
	if e := p.Spec.InitContainers[0].Env; len(e) != 2 || e[0].Name != "A" || e[1].Value != "2" {
		t.Errorf("sidecar env %+v, want A=1 B=2", e)
	}
	if len(p.Spec.HostAliases) != 1 || p.Spec.HostAliases[0].IP != "127.0.0.1" ||
		!slices.Equal(p.Spec.HostAliases[0].Hostnames, []string{"meadowrun-sidecar-0", "redis", "meadowrun-sidecar-1"}) {
		t.Errorf("host aliases %+v", p.Spec.HostAliases)
	}
	_, plain, _ := h.podSpec(driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1}})
	spec.Sidecars[1].Image = "busybox:2"
	_, other, _ := h.podSpec(spec)
	if key == plain || key == other {
		t.Errorf("pod keys: with sidecars %s, without %s, other sidecars %s: a reused pod must have the same sidecars", key, plain, other)
	}
	spec.Sidecars[0].Credentials = &driver.Credentials{Username: "u", Password: "p"}
	if _, _, err := h.podSpec(spec); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("sidecar with credentials: %v, want ErrUnsupported", err)
	}
}

func TestPortsAreHostPortsOfASingleUsePod(t *testing.T) {
	h := testHost(Options{})
	p, _, err := h.podSpec(driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1}, Ports: []string{"8080", "9000-9002"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []int32
	for _, cp := range p.Spec.Containers[0].Ports {
		if cp.HostPort != cp.ContainerPort {
			t.Errorf("port %+v: host port differs", cp)
		}
		got = append(got, cp.HostPort)
	}
	if !slices.Equal(got, []int32{8080, 9000, 9001, 9002}) {
		t.Errorf("host ports %v", got)
	}
	if _, ok := p.Labels[LabelReusable]; ok {
		t.Errorf("a pod with ports is labelled reusable: %v", p.Labels)
	}
	for _, bad := range []string{"0", "70000", "9-8", "x"} {
		if _, _, err := h.podSpec(driver.WorkerSpec{Ports: []string{bad}}); err == nil {
			t.Errorf("port %q accepted", bad)
		}
	}
	if _, _, err := h.podSpec(driver.WorkerSpec{Ports: []string{"1000-2000"}}); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("1001 ports: %v, want ErrUnsupported", err)
	}
}

func TestSidecarExitIsClassified(t *testing.T) {
	p := &corev1.Pod{}
	p.Name = "pod-1"
	p.Status.Phase = corev1.PodPending
	p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "sidecar-0", Image: "img:1", RestartCount: 1,
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}}}}
	done, err := podReady(p)
	if !done || !errors.Is(err, driver.ErrSidecarExited) {
		t.Fatalf("podReady = %v, %v, want ErrSidecarExited", done, err)
	}
	if want := "pod pod-1: sidecar sidecar-0 (img:1) exited with exit code 3 (Error)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestNodeExcludesWhatThePodCannotUse(t *testing.T) {
	h := testHost(Options{FlagLabels: map[string]string{"big": "size/big"}})
	spot := &corev1.Node{}
	spot.Labels = map[string]string{"eks.amazonaws.com/capacityType": "SPOT", "size/big": "yes"}
	tainted := &corev1.Node{}
	tainted.Spec.Taints = []corev1.Taint{{Key: "kubernetes.azure.com/scalesetpriority", Value: "spot", Effect: corev1.TaintEffectNoSchedule}}
	cordoned := &corev1.Node{}
	cordoned.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}}
	gpu := &corev1.Node{}
	gpu.Spec.Taints = []corev1.Taint{{Key: string(GPUResource), Value: "present", Effect: corev1.TaintEffectNoSchedule}}
	for _, tc := range []struct {
		name string
		n    *corev1.Node
		r    driver.Resources
		want string // "" : usable
	}{
		{"on-demand worker, spot node", spot, driver.Resources{MaxEvictionRate: 0}, "label eks.amazonaws.com/capacityType=SPOT"},
		{"spot worker, spot node", spot, driver.Resources{MaxEvictionRate: 80}, ""},
		{"flag the node has", spot, driver.Resources{MaxEvictionRate: 80, Flags: []string{"big"}}, ""},
		{"flag the node lacks", tainted, driver.Resources{MaxEvictionRate: 80, Flags: []string{"big"}}, "no label size/big"},
		{"on-demand worker, spot taint", tainted, driver.Resources{MaxEvictionRate: 0}, "taint kubernetes.azure.com/scalesetpriority=spot:NoSchedule not tolerated"},
		{"spot worker, spot taint", tainted, driver.Resources{MaxEvictionRate: 50}, ""},
		{"cordoned: not never", cordoned, driver.Resources{MaxEvictionRate: 0}, ""},
		{"GPU taint, no GPU asked", gpu, driver.Resources{MaxEvictionRate: 80}, "taint nvidia.com/gpu=present:NoSchedule not tolerated"},
		{"GPU taint, a GPU asked", gpu, driver.Resources{MaxEvictionRate: 80, GPUs: 1}, ""},
	} {
		p, _, err := h.podSpec(driver.WorkerSpec{Resources: tc.r})
		if err != nil {
			t.Fatal(err)
		}
		got := nodeExcludes(tc.n, p)
		if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: nodeExcludes = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCustomLabelsMakeAnotherKind(t *testing.T) {
	label := func(v string) *Host {
		return testHost(Options{Customize: func(p *corev1.Pod) error { p.Labels["team"] = v; return nil }})
	}
	spec := driver.WorkerSpec{Resources: driver.Resources{LogicalCPU: 1}}
	_, a, _ := label("a").podSpec(spec)
	_, b, _ := label("b").podSpec(spec)
	_, a2, _ := label("a").podSpec(spec)
	if a == b || a != a2 {
		t.Errorf("keys %s (team=a), %s (team=b), %s (team=a again): pods of other labels must not be shared", a, b, a2)
	}
}
