// Package k8shost is the Kubernetes host driver behind package kubernetes:
// workers run in pods, each pod runs meadowrun's agent (package agent) in a
// container, and everything between this process and a pod (the program's
// upload, by content, and every stream of the agent protocol) goes through
// the API server as exec sessions. No Service, node port or inbound port is
// opened for that; a job's own Ports are host ports of its pod.
//
// A pod is made for the resources of a worker (requests and limits) from a
// one-pod Job that removes itself once the agent exits, which the agent
// does after its idle timeout without a client: nothing lingers when the
// client dies. Reusable pods serve later workers with the same pod spec, of
// this process or of another; single-use pods are removed as soon as their
// worker ends.
package k8shost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/bucket"
)

// Options configure New; see kubernetes.Options for their meaning.
type Options struct {
	KubeConfig      string
	Context         string
	Namespace       string
	Image           string
	SingleUsePods   bool
	IdleTimeout     time.Duration
	ScheduleTimeout time.Duration
	FlagLabels      map[string]string
	SpotNodeLabels  map[string]string // nil: DefaultSpotNodeLabels
	SpotTaints      []corev1.Taint    // nil: DefaultSpotTaints
	ContainerMounts []string
	Customize       func(*corev1.Pod) error
	Binary          string
	Binaries        map[string]string
	Log             io.Writer
	// Storage, when not nil, is the bucket pods fetch the program from.
	Storage *StorageSpec
	// ReusablePods is !SingleUsePods.
	ReusablePods bool
	// JobsVolume, JobsServiceAccount and ClusterURL are the durable
	// jobs' (see jobs.go).
	JobsVolume         string
	JobsServiceAccount string
	ClusterURL         string
}

// DefaultImage is the image of worker pods when Options.Image is "".
const DefaultImage = "debian:12-slim"

// Host is the Kubernetes driver.Host.
type Host struct {
	opts    Options
	cs      kubernetes.Interface
	rest    *rest.Config
	ns      string
	context string
	server  string
	progs   *agentclient.Programs
	owner   string

	store    bucket.Store // Options.Storage's, or nil
	uploadMu sync.Mutex
	uploads  map[string]*upload // by key
	values   *valueStore        // nil without a bucket

	mu     sync.Mutex
	pods   map[string]*pod // by name
	closed bool
	done   chan struct{} // closed by Close: the reaper stops
}

// pod is a pod of this host's.
type pod struct {
	name, key string
	agent     *agentclient.Host // once running
	workers   int
	idleSince time.Time // when workers last fell to 0
	created   time.Time
	pending   bool // created, not scheduled yet
	starting  bool // being started by a Start call
	adopted   bool // made by another process
	single    bool // removed when its worker ends (single-use, or host ports)
	sidecars  int  // how many sidecars its spec has
	// ws are the workers running in it; sidecarErr, once set, is the
	// sidecar that stopped while the pod was in use (watchSidecars), and
	// unwatch stops that watch.
	ws         map[*worker]struct{}
	sidecarErr error
	unwatch    context.CancelFunc
}

// Config loads the kubeconfig of opts: the client configuration, the
// namespace and the context's name.
func Config(opts Options) (*rest.Config, string, string, error) {
	if cfg, ns, ok, err := inCluster(opts); ok {
		return cfg, ns, inClusterContext, err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if opts.KubeConfig != "" {
		rules.ExplicitPath = opts.KubeConfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: opts.Context})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, "", "", fmt.Errorf("kubernetes: reading the kubeconfig: %w", err)
	}
	ctxName := opts.Context
	if ctxName == "" {
		ctxName = raw.CurrentContext
	}
	if len(raw.Contexts) == 0 {
		// The files looked at: $KUBECONFIG's, or ~/.kube/config.
		where := strings.Join(rules.GetLoadingPrecedence(), ", ")
		if opts.KubeConfig != "" {
			where = opts.KubeConfig
		}
		return nil, "", "", fmt.Errorf("kubernetes: no kubeconfig with a context in %s: give the file of the cluster (KubeConfig, kubeconfig=FILE)", where)
	}
	if _, ok := raw.Contexts[ctxName]; !ok {
		var names []string
		for n := range raw.Contexts {
			names = append(names, n)
		}
		return nil, "", "", fmt.Errorf("kubernetes: no context %q in the kubeconfig (it has %s)", ctxName, strings.Join(names, ", "))
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", "", fmt.Errorf("kubernetes: context %s: %w", ctxName, err)
	}
	ns := opts.Namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	return cfg, ns, ctxName, nil
}

// quietKlog silences client-go's own log (klog, process-wide): exec
// streams that end log "errors" there as a matter of course, and what
// matters reaches the caller as errors and on Options.Log.
var quietKlog sync.Once

// New connects to the cluster: it checks that the API server answers and
// that the namespace exists.
func New(ctx context.Context, opts Options) (*Host, error) {
	quietKlog.Do(func() {
		klog.LogToStderr(false)
		klog.SetOutput(io.Discard)
		klog.SetLogger(logr.Discard())
	})
	cfg, ns, ctxName, err := Config(opts)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	if opts.Image == "" {
		opts.Image = DefaultImage
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.ScheduleTimeout == 0 {
		opts.ScheduleTimeout = 2 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	opts.ReusablePods = !opts.SingleUsePods
	h := &Host{opts: opts, cs: cs, rest: cfg, ns: ns, context: ctxName, server: cfg.Host, pods: map[string]*pod{}, done: make(chan struct{})}
	b := make([]byte, 6)
	rand.Read(b)
	host, _ := os.Hostname()
	h.owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	// The check is not cut short by ctx's cancellation: a supervisor
	// whose job is cancelled as it opens the host must still open it to
	// record the cancellation.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Get(cctx, ns, metav1.GetOptions{}); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("kubernetes: namespace %s does not exist in the cluster of context %s (create it, or give another: Namespace, namespace=NAME)", ns, ctxName)
		case apierrors.IsForbidden(err):
			// A user confined to the namespace may not read it: its
			// pods say soon enough whether it exists.
			if _, perr := cs.CoreV1().Pods(ns).List(cctx, metav1.ListOptions{Limit: 1}); perr != nil {
				return nil, fmt.Errorf("kubernetes: context %s, namespace %s: %w", ctxName, ns, h.classify(perr))
			}
		default:
			return nil, fmt.Errorf("kubernetes: the API server %s of context %s: %w", cfg.Host, ctxName, h.classify(err))
		}
	}
	if opts.Storage != nil {
		if h.store, err = h.openStorage(cctx); err != nil {
			return nil, err
		}
		h.uploads = map[string]*upload{}
		h.values = h.newValueStore()
	}
	if h.progs, err = agentclient.NewPrograms("kubernetes host", opts.Binary, opts.Binaries); err != nil {
		return nil, err
	}
	go h.reap()
	return h, nil
}

// reap lets go of the host's pods that have been idle (no worker) for
// IdleTimeout, until Close. The agent of a pod counts its idle time only
// while no client is connected, so without this a long-lived host would
// hold its idle pods, and their share of the cluster, for as long as it
// lives: other hosts' pods, in this process or another, could then stay
// unschedulable. A pod this host created is removed; one it adopted is
// left to its agent's own idle timeout.
func (h *Host) reap() {
	every := min(max(h.opts.IdleTimeout/4, 250*time.Millisecond), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-t.C:
		}
		h.mu.Lock()
		var idle []*pod
		for _, p := range h.pods {
			if h.reapable(p) {
				idle = append(idle, p)
			}
		}
		h.mu.Unlock()
		for _, p := range idle {
			h.forgetIf(p, func() bool { return h.reapable(p) })
		}
	}
}

// Namespace is the namespace the host's pods are in.
func (h *Host) Namespace() string { return h.ns }

// Context is the kubeconfig context's name.
func (h *Host) Context() string { return h.context }

// Client is the host's API client.
func (h *Host) Client() kubernetes.Interface { return h.cs }

// ExpectedDigest is the build ID workers must report: this program's.
func (h *Host) ExpectedDigest() string { return h.progs.SelfDigest() }

// Name implements driver.Host.
func (h *Host) Name() string { return "kubernetes " + h.context + "/" + h.ns }

// Capabilities implements driver.Host.
func (h *Host) Capabilities() driver.Capabilities {
	return driver.Capabilities{CapturesOutput: true, ProcessExits: true, MemoryLimits: true, Sidecars: true, Ports: true,
		Runtimes: []driver.Runtime{driver.RuntimePython},
		// An interpreter of the pods' image; a container deployment's
		// image is the pod's (Start).
		Deployments: []driver.DeploymentKind{driver.DeployInterpreter, driver.DeployContainer}}
}

// Fit implements driver.Host: how many workers of r the schedulable nodes
// hold when they run nothing else, or ErrNeverFits naming what they have.
func (h *Host) Fit(ctx context.Context, r driver.Resources) (int, error) {
	tmpl, _, err := h.podSpec(driver.WorkerSpec{Resources: r})
	if err != nil {
		return 0, err
	}
	res := tmpl.Spec.Containers[0].Resources
	nodes, err := h.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		if apierrors.IsForbidden(err) {
			// Without the right to read nodes, the scheduler decides.
			return 1, nil
		}
		return 0, fmt.Errorf("kubernetes: listing nodes: %w", h.classify(err))
	}
	total, later := 0, 0
	var have []string
	for i := range nodes.Items {
		n := &nodes.Items[i]
		c, what := nodeFits(n, res)
		if why := nodeExcludes(n, tmpl); why != "" {
			c, what = 0, what+" ("+why+")"
		}
		have = append(have, what)
		if n.Spec.Unschedulable || !nodeReady(n) {
			// Cordoned or not Ready for now: not "never".
			later += c
			continue
		}
		total += c
	}
	if total == 0 && later > 0 {
		// The scheduler places the pod once the node is back, or the
		// job fails after ScheduleTimeout.
		return later, nil
	}
	if total == 0 {
		if len(have) == 0 {
			have = append(have, "the cluster has no nodes")
		}
		return 0, fmt.Errorf("kubernetes: a worker of %s (pod requests %s) %w: %s", r, requestsString(res), driver.ErrNeverFits, strings.Join(have, "; "))
	}
	return total, nil
}

func requestsString(res corev1.ResourceRequirements) string {
	var parts []string
	for _, n := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, GPUResource, corev1.ResourceEphemeralStorage} {
		if q, ok := res.Requests[n]; ok {
			parts = append(parts, string(n)+" "+q.String())
		}
	}
	return strings.Join(parts, ", ")
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Start implements driver.Host: the worker goes to a running pod of its
// spec that has room (reusable pods), else to a new pod. A new pod the
// scheduler cannot place now is kept waiting and the call returns
// ErrNoCapacity, until ScheduleTimeout, when it fails for good.
func (h *Host) Start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	tmpl, key, err := h.podSpec(spec)
	if err != nil {
		return nil, err
	}
	// The pod enforces what the agent in it cannot see (GPUs, disk,
	// node flags); the agent enforces memory and CPU for its worker.
	aspec := spec
	aspec.Resources.GPUs, aspec.Resources.GPUMemoryBytes, aspec.Resources.Flags, aspec.Resources.EphemeralBytes = 0, 0, nil, 0
	// The pod holds the sidecars and the host ports.
	aspec.Sidecars, aspec.Ports = nil, nil
	single := !h.opts.ReusablePods || len(spec.Ports) > 0
	if spec.Deployment.KindOrDefault() == driver.DeployContainer {
		// The pod runs the image: the worker runs in it as a process.
		aspec.Deployment = driver.Deployment{Interpreter: spec.Deployment.Interpreter}
		if spec.Runtime == driver.RuntimePython {
			aspec.Deployment.Kind = driver.DeployInterpreter
			if aspec.Deployment.Interpreter == "" {
				aspec.Deployment.Interpreter = "python3"
			}
		}
	}
	if !single {
		if w, err := h.startOnExisting(ctx, key, aspec); w != nil || err != nil {
			return w, err
		}
	}
	// A pod of this spec still waiting for the scheduler.
	if w, err, waited := h.startOnPending(ctx, key, aspec); waited {
		return w, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	_, name, err := h.createPod(ctx, tmpl)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.deletePodJob(name)
		return nil, errors.New("kubernetes: host closed")
	}
	p := &pod{name: name, key: key, created: time.Now(), starting: true, single: single, sidecars: len(spec.Sidecars)}
	h.pods[name] = p
	h.mu.Unlock()
	return h.bringUp(ctx, p, aspec)
}

// bringUp waits for p to run and starts the worker on it. A new pod
// without sidecars is connected to as soon as it is bound to its node:
// the program's upload and the agent's start then overlap the container's
// start and the kubelet's report of it (exec sessions are retried until
// the container takes them), and the worker is returned once the pod is
// seen Running. A pod with sidecars is connected to once they have run
// for sidecarGrace (settleSidecars).
func (h *Host) bringUp(ctx context.Context, p *pod, spec driver.WorkerSpec) (driver.Worker, error) {
	tr := &transport{h: h, pod: p.name, id: machineID(p.name)}
	var running <-chan error // the pod's start, while it is connected to early
	var err error
	if p.sidecars == 0 && !p.adopted {
		onNode := make(chan struct{})
		ch := make(chan error, 1)
		tr.starting.Store(true)
		go func() { ch <- h.waitStarted(ctx, p.name, func() { close(onNode) }) }()
		select {
		case err = <-ch:
			tr.starting.Store(false)
		case <-onNode:
			running = ch
		}
	} else {
		err = h.waitRunning(ctx, p.name)
	}
	var pe *errPending
	if errors.As(err, &pe) {
		h.mu.Lock()
		p.pending, p.starting = true, false
		p.idleSince = time.Now() // a job that still wants it comes back soon
		h.mu.Unlock()
		h.makeWay(p.key)
		return nil, fmt.Errorf("kubernetes: %w: %s", driver.ErrNoCapacity, pe.msg)
	}
	if err != nil {
		h.forget(p)
		return nil, err
	}
	cctx := ctx
	var startErr chan error // the pod's start, once connecting is over
	if running != nil {
		// A pod that fails to start (its image, its container) ends the
		// connecting at once.
		var cancel context.CancelCauseFunc
		cctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		startErr = make(chan error, 1)
		go func() {
			err := <-running
			if err == nil {
				tr.starting.Store(false)
			} else {
				cancel(err)
			}
			startErr <- err
		}()
	}
	fail := func(err error) (driver.Worker, error) {
		if startErr != nil {
			select {
			case serr := <-startErr:
				if serr != nil {
					err = serr // why connecting failed
				}
			case <-time.After(5 * time.Second):
			}
		}
		h.forget(p)
		return nil, err
	}
	ah, err := agentclient.New(agentclient.Options{Kind: "kubernetes pod", Programs: h.progs, Content: h.content(), Values: h.valueStore(), Log: h.opts.Log, GiveUpAfter: 30 * time.Second},
		[]agentclient.MachineConfig{{Name: p.name, Transport: tr, ConnectTimeout: 60 * time.Second, KeepAlive: 2 * time.Second}})
	if err != nil {
		return fail(err)
	}
	// Fit connects to the pod's agent (bootstrapping it) and checks that
	// the worker fits the pod.
	if _, err := ah.Fit(cctx, spec.Resources); err != nil {
		ah.Close()
		return fail(err)
	}
	h.mu.Lock()
	p.agent, p.pending, p.starting = ah, false, false
	p.workers++
	h.mu.Unlock()
	w, err := ah.Start(cctx, spec)
	if err == nil && startErr != nil {
		if err = <-startErr; err != nil {
			w.Kill()
		}
		startErr = nil
	}
	if err != nil {
		h.mu.Lock()
		p.workers--
		h.mu.Unlock()
		return fail(err)
	}
	if p.sidecars > 0 {
		h.watchSidecars(p)
	}
	return h.wrap(p, w), nil
}

// machineID is the agent's machine id in a pod: the pod's name is unique
// in its namespace for as long as it exists.
func machineID(pod string) string {
	s := strings.ReplaceAll(pod, "-", "")
	if len(s) > 8 {
		s = s[len(s)-8:]
	}
	return s
}

// startOnExisting starts the worker on a running pod of key, this
// process's or another's; (nil, nil) when none has room.
func (h *Host) startOnExisting(ctx context.Context, key string, spec driver.WorkerSpec) (driver.Worker, error) {
	h.mu.Lock()
	var mine []*pod
	for _, p := range h.pods {
		if p.key == key && p.agent != nil && !p.pending && !p.starting && p.sidecarErr == nil {
			mine = append(mine, p)
		}
	}
	h.mu.Unlock()
	// Idle ones first.
	for pass := 0; pass < 2; pass++ {
		for _, p := range mine {
			h.mu.Lock()
			busy := p.workers > 0
			if busy != (pass == 1) || h.pods[p.name] != p {
				h.mu.Unlock()
				continue
			}
			p.workers++
			h.mu.Unlock()
			w, err := p.agent.Start(ctx, spec)
			if err == nil {
				return h.wrap(p, w), nil
			}
			h.mu.Lock()
			p.workers--
			if p.workers == 0 {
				p.idleSince = time.Now()
			}
			h.mu.Unlock()
			if errors.Is(err, driver.ErrUnreachable) || !errors.Is(err, driver.ErrNoCapacity) {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if errors.Is(err, driver.ErrUnsupported) || errors.Is(err, driver.ErrNeverFits) {
					return nil, err
				}
				h.forget(p)
			}
		}
	}
	// Reusable pods of other processes.
	l, err := h.cs.CoreV1().Pods(h.ns).List(ctx, metav1.ListOptions{LabelSelector: LabelSpec + "=" + key + "," + LabelReusable + "=true"})
	if err != nil {
		return nil, nil
	}
	for i := range l.Items {
		kp := &l.Items[i]
		if kp.Status.Phase != corev1.PodRunning || kp.DeletionTimestamp != nil {
			continue
		}
		h.mu.Lock()
		_, known := h.pods[kp.Name]
		if known || h.closed {
			h.mu.Unlock()
			continue
		}
		p := &pod{name: kp.Name, key: key, created: kp.CreationTimestamp.Time, starting: true, adopted: true, sidecars: len(kp.Spec.InitContainers)}
		h.pods[kp.Name] = p
		h.mu.Unlock()
		w, err := h.bringUp(ctx, p, spec)
		if err == nil {
			return w, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, nil
}

// startOnPending looks at a pod of key that waits for the scheduler:
// waited is true when there is one, and err says what became of it.
func (h *Host) startOnPending(ctx context.Context, key string, spec driver.WorkerSpec) (driver.Worker, error, bool) {
	h.mu.Lock()
	var p *pod
	for _, q := range h.pods {
		if q.key == key && q.pending {
			p = q
			break
		}
	}
	if p == nil {
		h.mu.Unlock()
		return nil, nil, false
	}
	p.pending, p.starting = false, true
	h.mu.Unlock()
	if time.Since(p.created) > h.opts.ScheduleTimeout {
		ctx2, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		msg := "it is still pending"
		if kp, err := h.cs.CoreV1().Pods(h.ns).Get(ctx2, p.name, metav1.GetOptions{}); err == nil {
			for _, c := range kp.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
					msg = c.Message
				}
			}
		}
		h.forget(p)
		return nil, fmt.Errorf("kubernetes: pod %s could not be scheduled for %v (ScheduleTimeout): %s", p.name, h.opts.ScheduleTimeout, msg), true
	}
	w, err := h.bringUp(ctx, p, spec)
	return w, err, true
}

// makeWay removes this host's idle pods of other specs, whose requests
// may be what keeps a pod of key from being scheduled.
func (h *Host) makeWay(key string) {
	h.mu.Lock()
	var idle []*pod
	for _, p := range h.pods {
		if p.key != key && p.workers == 0 && !p.starting {
			idle = append(idle, p)
		}
	}
	h.mu.Unlock()
	for _, p := range idle {
		h.forget(p)
	}
}

// reapable says, with h.mu held, whether p has been of no use for
// IdleTimeout: running with no worker, or waiting for the scheduler with
// no job asking for it (a pod left pending when its job ended would
// otherwise start later, hold its CPUs, and wait 2 minutes for an agent
// that never comes).
func (h *Host) reapable(p *pod) bool {
	if p.starting || p.workers > 0 || time.Since(p.idleSince) <= h.opts.IdleTimeout {
		return false
	}
	return (p.agent != nil && !p.pending) || (p.agent == nil && p.pending)
}

// forget stops using p and removes its Job, unless another process made it.
func (h *Host) forget(p *pod) { h.forgetIf(p, func() bool { return true }) }

// forgetIf is forget when cond, called with h.mu held, is true.
func (h *Host) forgetIf(p *pod, cond func() bool) {
	h.mu.Lock()
	if h.pods[p.name] != p || !cond() {
		h.mu.Unlock()
		return
	}
	delete(h.pods, p.name)
	ah := p.agent
	if p.unwatch != nil {
		p.unwatch()
	}
	h.mu.Unlock()
	if ah != nil {
		ah.Close()
	}
	if !p.adopted {
		h.deletePodJob(p.name)
	}
}

// deletePodJob removes the Job of pod (and so the pod).
func (h *Host) deletePodJob(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := h.cs.CoreV1().Pods(h.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return
	}
	if job := p.Labels["batch.kubernetes.io/job-name"]; job != "" {
		h.deleteJob(job)
		return
	}
	grace := int64(0)
	h.cs.CoreV1().Pods(h.ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
}

// wrap returns w, whose end releases its pod: a single-use pod is removed.
func (h *Host) wrap(p *pod, w driver.Worker) driver.Worker {
	kw := &worker{Worker: w, h: h, p: p, done: make(chan struct{})}
	h.mu.Lock()
	if p.ws == nil {
		p.ws = map[*worker]struct{}{}
	}
	p.ws[kw] = struct{}{}
	stopped := p.sidecarErr
	h.mu.Unlock()
	if stopped != nil {
		w.Kill() // a sidecar stopped as it started
	}
	go func() {
		<-w.Done()
		kw.exit = w.Exit()
		if kw.exit.Lost && h.oomKilled(p.name) {
			kw.exit.Lost, kw.exit.OOMKilled = false, true
		}
		h.mu.Lock()
		delete(p.ws, kw)
		if p.sidecarErr != nil {
			// The task fails with the sidecar's exit, and the pod, whose
			// sidecar the kubelet restarted, serves no other.
			kw.exit.Cause, kw.exit.Lost = p.sidecarErr, false
		}
		p.workers--
		if p.workers == 0 {
			p.idleSince = time.Now()
		}
		drop := p.single && p.workers == 0 || p.sidecarErr != nil && p.workers == 0
		h.mu.Unlock()
		if drop || kw.exit.Lost {
			h.forget(p)
		}
		close(kw.done)
	}()
	return kw
}

// worker is a worker in a pod.
type worker struct {
	driver.Worker
	h    *Host
	p    *pod
	done chan struct{}
	exit driver.ExitStatus
}

// Done implements driver.Worker: closed once the pod is released too.
func (w *worker) Done() <-chan struct{} { return w.done }

// Exit implements driver.Worker, with an OOM kill of the pod classified.
func (w *worker) Exit() driver.ExitStatus { return w.exit }

// Machine implements driver.Worker: the pod.
func (w *worker) Machine() string { return w.p.name }

// ExpectedDigest is the build ID the worker reports.
func (w *worker) ExpectedDigest() string { return w.h.ExpectedDigest() }

// Close implements driver.Host: workers are killed; single-use pods are
// removed, reusable ones stay until their agents' idle timeout.
func (h *Host) Close() error {
	h.mu.Lock()
	if !h.closed {
		close(h.done)
	}
	h.closed = true
	pods := make([]*pod, 0, len(h.pods))
	for _, p := range h.pods {
		pods = append(pods, p)
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() {
			h.mu.Lock()
			ah := p.agent
			if p.unwatch != nil {
				p.unwatch()
			}
			h.mu.Unlock()
			if ah != nil {
				ah.Close()
			}
			if p.single || ah == nil {
				// Single-use pods, and pods that never got an agent
				// (pending, or still starting), go with the host.
				h.mu.Lock()
				delete(h.pods, p.name)
				h.mu.Unlock()
				h.deletePodJob(p.name)
			}
		})
	}
	wg.Wait()
	if h.values != nil {
		h.values.close()
	}
	h.progs.Close()
	return nil
}

// Describe implements driver.Describer: the cluster's nodes.
func (h *Host) Describe(ctx context.Context) []driver.Machine {
	nodes, err := h.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return []driver.Machine{{Name: h.Name(), Err: fmt.Errorf("kubernetes: listing nodes: %w", h.classify(err))}}
	}
	var out []driver.Machine
	for _, n := range nodes.Items {
		a := n.Status.Allocatable
		m := driver.Machine{Name: n.Name, Platform: n.Status.NodeInfo.OperatingSystem + "/" + n.Status.NodeInfo.Architecture,
			Limiter: "kubelet", Containers: n.Status.NodeInfo.ContainerRuntimeVersion,
			Capacity: driver.Resources{LogicalCPU: float64(a.Cpu().MilliValue()) / 1000, MemoryBytes: a.Memory().Value()},
			Labels:   maps.Clone(n.Labels)}
		for _, t := range n.Spec.Taints {
			// Taints are shown with the labels: they decide which pods
			// the node takes.
			if m.Labels == nil {
				m.Labels = map[string]string{}
			}
			m.Labels["taint "+t.Key] = t.Value + ":" + string(t.Effect)
		}
		if g, ok := a[GPUResource]; ok {
			m.Capacity.GPUs = float64(g.Value())
			for i := int64(0); i < g.Value(); i++ {
				m.GPUNames = append(m.GPUNames, string(GPUResource))
			}
		}
		if e, ok := a[corev1.ResourceEphemeralStorage]; ok {
			m.Capacity.EphemeralBytes = e.Value()
		}
		for k := range n.Labels {
			if f, ok := strings.CutPrefix(k, "meadowrun.dev/"); ok {
				m.Capacity.Flags = append(m.Capacity.Flags, f)
			}
		}
		if n.Spec.Unschedulable {
			m.Err = errors.New("cordoned (unschedulable)")
		} else if !nodeReady(&n) {
			m.Err = errors.New("not Ready")
		}
		out = append(out, m)
	}
	return out
}
