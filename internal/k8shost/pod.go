package k8shost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// Labels and annotations of what meadowrun creates.
const (
	// LabelManaged is on every Job and pod meadowrun creates
	// ("meadowrun k8s clean" removes them).
	LabelManaged = "meadowrun.dev/managed"
	// LabelSpec is the hash of a pod's spec: pods of one hash are
	// interchangeable, so a reusable pod serves any worker of that spec.
	LabelSpec = "meadowrun.dev/spec"
	// LabelReusable marks pods that serve later workers until idle.
	LabelReusable = "meadowrun.dev/reusable"
	// AnnotationOwner names the process that created a pod.
	AnnotationOwner = "meadowrun.dev/owner"
)

// agentOverhead is the memory a pod has beyond its worker's limit: the
// agent and the shell that starts it.
const agentOverhead = 64 << 20

// GPUResource is the extended resource of NVIDIA GPUs.
const GPUResource corev1.ResourceName = "nvidia.com/gpu"

// podScript is the agent container's command: it waits until a first
// agent was started (Bootstrap), then ends once no agent runs any more
// (each exits after its idle timeout), which ends the pod and its Job. A
// pod whose client went away before it started an agent ends after 2
// minutes.
// Agents of several programs can share a pod.
func podScript() string {
	return `d=` + agentDir + `; i=0; while [ ! -e "$d/started" ]; do i=$((i+1)); [ $i -gt 2400 ] && exit 0; sleep 0.05; done; ` +
		`while :; do a=; for f in "$d"/agent-*.pid; do [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && a=1; done; ` +
		`[ -z "$a" ] && exit 0; sleep 1; done`
}

// resourcesOf is the requests and limits of a worker's container.
func (h *Host) resourcesOf(r driver.Resources) (corev1.ResourceRequirements, error) {
	req := corev1.ResourceList{}
	lim := corev1.ResourceList{}
	if r.LogicalCPU > 0 {
		// A request without a limit: the worker may use idle CPUs of the
		// node, never throttled by CFS quotas; the pod's CPU count reaches
		// the agent and GOMAXPROCS through the Downward API (cpuEnv).
		q := resource.NewMilliQuantity(int64(math.Ceil(r.LogicalCPU*1000)), resource.DecimalSI)
		req[corev1.ResourceCPU] = *q
	}
	if r.MemoryBytes > 0 {
		q := resource.NewQuantity(r.MemoryBytes+agentOverhead, resource.BinarySI)
		req[corev1.ResourceMemory], lim[corev1.ResourceMemory] = *q, *q
	} else {
		req[corev1.ResourceMemory] = *resource.NewQuantity(agentOverhead, resource.BinarySI)
	}
	if r.GPUs > 0 {
		if r.GPUs != math.Trunc(r.GPUs) {
			return corev1.ResourceRequirements{}, fmt.Errorf("%w: %g GPUs: Kubernetes allocates whole GPUs", driver.ErrUnsupported, r.GPUs)
		}
		q := resource.NewQuantity(int64(r.GPUs), resource.DecimalSI)
		req[GPUResource], lim[GPUResource] = *q, *q
	}
	if r.EphemeralBytes > 0 {
		q := resource.NewQuantity(r.EphemeralBytes, resource.BinarySI)
		req[corev1.ResourceEphemeralStorage], lim[corev1.ResourceEphemeralStorage] = *q, *q
	}
	return corev1.ResourceRequirements{Requests: req, Limits: lim}, nil
}

// podSpec is the pod template of workers of spec, with the hash that
// names its kind; programSHA is the program it runs as the agent.
func (h *Host) podSpec(spec driver.WorkerSpec) (*corev1.Pod, string, error) {
	res, err := h.resourcesOf(spec.Resources)
	if err != nil {
		return nil, "", err
	}
	image := h.opts.Image
	if spec.Deployment.KindOrDefault() == driver.DeployContainer {
		image = spec.Deployment.Image
	}
	grace := int64(2)
	no := false
	yes := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      map[string]string{LabelManaged: "true"},
			Annotations: map[string]string{AnnotationOwner: h.owner},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ShareProcessNamespace:         &yes, // pause is PID 1 and reaps what workers leave
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			Containers: []corev1.Container{{
				Name:            containerName,
				Image:           image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"sh", "-c", podScript()},
				Resources:       res,
				VolumeMounts:    []corev1.VolumeMount{{Name: "meadowrun", MountPath: agentDir}},
			}},
			Volumes: []corev1.Volume{{Name: "meadowrun", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	if h.opts.ReusablePods {
		p.Labels[LabelReusable] = "true"
	}
	for i, m := range h.opts.ContainerMounts {
		parts := strings.Split(m, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] != "ro") {
			return nil, "", fmt.Errorf("kubernetes: mount %q: want NODE_PATH:CONTAINER_PATH[:ro]", m)
		}
		name := fmt.Sprintf("mount-%d", i)
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: parts[0]}}})
		c := &p.Spec.Containers[0]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: parts[1], ReadOnly: len(parts) == 3})
	}
	for _, f := range spec.Resources.Flags {
		label, ok := h.opts.FlagLabels[f]
		if !ok {
			label = "meadowrun.dev/" + f
		}
		p.Spec.Affinity = addNodeRequirement(p.Spec.Affinity, corev1.NodeSelectorRequirement{Key: label, Operator: corev1.NodeSelectorOpExists})
	}
	if spec.Resources.GPUs > 0 {
		p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: string(GPUResource), Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	}
	h.addEvictionRules(p, spec.Resources.MaxEvictionRate)
	c := &p.Spec.Containers[0]
	if spec.Resources.LogicalCPU > 0 {
		c.Env = append(c.Env, cpuEnv()...)
	}
	if err := addPorts(c, spec.Ports); err != nil {
		return nil, "", err
	}
	if len(spec.Ports) > 0 {
		// A port is the node's while the pod exists: the pod is the job's
		// alone, removed when its worker ends.
		delete(p.Labels, LabelReusable)
	}
	if err := addSidecars(p, spec.Sidecars); err != nil {
		return nil, "", err
	}
	if h.opts.Customize != nil {
		if err := h.opts.Customize(p); err != nil {
			return nil, "", fmt.Errorf("kubernetes: pod customization: %w", err)
		}
	}
	// The hash covers the pod as it will be created, its labels too (a
	// customization's), so that only identical pods are shared.
	b, _ := json.Marshal(struct {
		Labels map[string]string
		Spec   corev1.PodSpec
	}{p.Labels, p.Spec})
	sum := sha256.Sum256(b)
	key := hex.EncodeToString(sum[:])[:20]
	p.Labels[LabelSpec] = key
	return p, key, nil
}

func addNodeRequirement(a *corev1.Affinity, r corev1.NodeSelectorRequirement) *corev1.Affinity {
	if a == nil {
		a = &corev1.Affinity{}
	}
	if a.NodeAffinity == nil {
		a.NodeAffinity = &corev1.NodeAffinity{}
	}
	na := a.NodeAffinity
	if na.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		na.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{}}}
	}
	terms := na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	for i := range terms {
		terms[i].MatchExpressions = append(terms[i].MatchExpressions, r)
	}
	return a
}

// createPod creates a Job of one pod from the template p and returns the
// pod's name once the Job controller made it. The Job removes itself and
// its pod once the agent exits (idle, or its client gone), so nothing is
// left behind.
func (h *Host) createPod(ctx context.Context, p *corev1.Pod) (string, string, error) {
	zero := int32(0)
	one := int32(1)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "meadowrun-" + p.Labels[LabelSpec][:8] + "-", Labels: p.Labels, Annotations: p.Annotations},
		Spec: batchv1.JobSpec{
			BackoffLimit:            &zero,
			Parallelism:             &one,
			Completions:             &one,
			TTLSecondsAfterFinished: &zero,
			Template:                corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec},
		},
	}
	job, err := h.cs.BatchV1().Jobs(h.ns).Create(ctx, job, metav1.CreateOptions{})
	if err != nil {
		return "", "", fmt.Errorf("kubernetes: creating a Job in namespace %s: %w", h.ns, h.classify(err))
	}
	sel := "batch.kubernetes.io/job-name=" + job.Name
	for {
		l, err := h.cs.CoreV1().Pods(h.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			h.deleteJob(job.Name)
			return "", "", fmt.Errorf("kubernetes: listing the pods of Job %s: %w", job.Name, h.classify(err))
		}
		if len(l.Items) > 0 {
			return job.Name, l.Items[0].Name, nil
		}
		w, err := h.cs.CoreV1().Pods(h.ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: l.ResourceVersion})
		if err != nil {
			h.deleteJob(job.Name)
			return "", "", fmt.Errorf("kubernetes: watching the pods of Job %s: %w", job.Name, h.classify(err))
		}
		for ev := range w.ResultChan() {
			if pp, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Added {
				w.Stop()
				return job.Name, pp.Name, nil
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			h.deleteJob(job.Name)
			return "", "", ctx.Err()
		}
	}
}

// deleteJob removes a Job and its pod, in the background.
func (h *Host) deleteJob(name string) {
	bg := metav1.DeletePropagationBackground
	grace := int64(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.cs.BatchV1().Jobs(h.ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg, GracePeriodSeconds: &grace})
}

// errPending is waitRunning's error for a pod the scheduler cannot place
// now: the caller waits for capacity.
type errPending struct{ msg string }

func (e *errPending) Error() string { return e.msg }

// waitRunning waits until pod runs. A pod the scheduler cannot place is
// *errPending at once; a pod whose image cannot be pulled, that failed,
// or was deleted is an error at once.
func (h *Host) waitRunning(ctx context.Context, name string) error {
	if err := h.waitStarted(ctx, name, nil); err != nil {
		return err
	}
	return h.settleSidecars(ctx, name)
}

// sidecarGrace is how long a new pod's sidecars must have run before its
// worker starts, so that one that exits at once fails the job with
// ErrSidecarExited rather than leave a task to find it missing. It
// covers the kubelet's relist period (1 s), after which a container's
// exit shows in the pod's status.
const sidecarGrace = 2 * time.Second

// settleSidecars waits until every sidecar of pod name has been running
// for sidecarGrace, and returns ErrSidecarExited if one stopped. A pod
// without sidecars returns at once; one whose sidecars are still not
// running after 30 s is left to its worker.
func (h *Host) settleSidecars(ctx context.Context, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := h.cs.CoreV1().Pods(h.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("kubernetes: pod %s: %w", name, h.classify(err))
		}
		if err := sidecarExited(p); err != nil {
			return h.withSidecarLog(err)
		}
		var latest time.Time
		running := true
		for _, cs := range p.Status.InitContainerStatuses {
			if !strings.HasPrefix(cs.Name, "sidecar-") {
				continue
			}
			if cs.State.Running == nil {
				running = false
			} else if t := cs.State.Running.StartedAt.Time; t.After(latest) {
				latest = t
			}
		}
		if latest.IsZero() && running {
			return nil // no sidecars
		}
		wait := time.Until(latest.Add(sidecarGrace))
		if running && wait <= 0 || time.Now().After(deadline) {
			return nil
		}
		if !running || wait > sidecarGrace {
			wait = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// waitStarted waits until pod name runs (waitRunning, sidecars aside).
// onNode, when not nil, is called once the pod is bound to its node.
func (h *Host) waitStarted(ctx context.Context, name string, onNode func()) error {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	bound := func(p *corev1.Pod) {
		if onNode != nil && p.Spec.NodeName != "" {
			onNode()
			onNode = nil
		}
	}
	for {
		l, err := h.cs.CoreV1().Pods(h.ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return fmt.Errorf("kubernetes: pod %s: %w", name, h.classify(err))
		}
		if len(l.Items) == 0 {
			return fmt.Errorf("%w: pod %s was deleted as it started", driver.ErrUnreachable, name)
		}
		bound(&l.Items[0])
		if done, err := podReady(&l.Items[0]); done {
			return h.withSidecarLog(err)
		}
		w, err := h.cs.CoreV1().Pods(h.ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
		if err != nil {
			return fmt.Errorf("kubernetes: watching pod %s: %w", name, h.classify(err))
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				w.Stop()
				return fmt.Errorf("%w: pod %s was deleted as it started", driver.ErrUnreachable, name)
			}
			if p, ok := ev.Object.(*corev1.Pod); ok {
				bound(p)
				if done, err := podReady(p); done {
					w.Stop()
					return h.withSidecarLog(err)
				}
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// watchSidecars watches the sidecars of pod p, once they have started,
// until the host lets go of p: one that stops (the kubelet restarts it,
// and its restart count rises) fails the tasks of p's workers with
// ErrSidecarExited, its exit code and the end of its log, and p serves
// no other worker.
func (h *Host) watchSidecars(p *pod) {
	ctx, cancel := context.WithCancel(context.Background())
	h.mu.Lock()
	if p.unwatch != nil || h.pods[p.name] != p {
		h.mu.Unlock()
		cancel()
		return
	}
	p.unwatch = cancel
	h.mu.Unlock()
	go func() {
		defer cancel()
		err := h.sidecarStop(ctx, p.name)
		if err == nil || ctx.Err() != nil {
			return
		}
		err = h.withSidecarLog(err)
		h.mu.Lock()
		p.sidecarErr = err
		ws := make([]*worker, 0, len(p.ws))
		for w := range p.ws {
			ws = append(ws, w)
		}
		idle := p.workers == 0
		h.mu.Unlock()
		fmt.Fprintf(h.opts.Log, "[meadowrun] %v: its pod's workers are stopped\n", err)
		for _, w := range ws {
			w.Worker.Kill()
		}
		if idle {
			h.forget(p)
		}
	}()
}

// sidecarStop waits until a sidecar of pod name stops (its restart count
// rises above what it was when the watch began, or it is terminated), and
// returns its *sidecarExitedError; nil once the pod is gone or ctx ends.
func (h *Host) sidecarStop(ctx context.Context, name string) error {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	base := map[string]int32{}
	check := func(p *corev1.Pod) error {
		for _, cs := range p.Status.InitContainerStatuses {
			if !strings.HasPrefix(cs.Name, "sidecar-") {
				continue
			}
			n, seen := base[cs.Name]
			if !seen {
				base[cs.Name] = cs.RestartCount
				n = cs.RestartCount
			}
			t := cs.State.Terminated
			if t == nil && cs.RestartCount > n {
				t = cs.LastTerminationState.Terminated
			}
			if t != nil {
				return &sidecarExitedError{pod: p.Name, container: cs.Name, image: cs.Image, code: t.ExitCode, reason: t.Reason, running: true}
			}
		}
		return nil
	}
	for ctx.Err() == nil {
		l, err := h.cs.CoreV1().Pods(h.ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if len(l.Items) == 0 || l.Items[0].DeletionTimestamp != nil {
			return nil
		}
		if err := check(&l.Items[0]); err != nil {
			return err
		}
		w, err := h.cs.CoreV1().Pods(h.ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
		if err != nil {
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				w.Stop()
				return nil
			}
			if p, ok := ev.Object.(*corev1.Pod); ok {
				if err := check(p); err != nil {
					w.Stop()
					return err
				}
			}
		}
		w.Stop()
	}
	return nil
}

// withSidecarLog adds to a sidecar's exit the end of what it printed.
func (h *Host) withSidecarLog(err error) error {
	var se *sidecarExitedError
	if !errors.As(err, &se) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tail := int64(20)
	for _, previous := range []bool{true, false} {
		b, lerr := h.cs.CoreV1().Pods(h.ns).GetLogs(se.pod, &corev1.PodLogOptions{Container: se.container, Previous: previous, TailLines: &tail}).DoRaw(ctx)
		// The kubelet answers a log it no longer has with a message of
		// its own: then the other instance's.
		if lerr == nil && len(strings.TrimSpace(string(b))) > 0 && !strings.HasPrefix(string(b), "unable to retrieve container logs") {
			return fmt.Errorf("kubernetes: %w; it printed: %s", err, strings.TrimSpace(string(b)))
		}
	}
	return fmt.Errorf("kubernetes: %w", err)
}

// podReady says whether pod's start is over and how it went.
func podReady(p *corev1.Pod) (bool, error) {
	if err := sidecarExited(p); err != nil {
		return true, err
	}
	switch p.Status.Phase {
	case corev1.PodRunning:
		return true, nil
	case corev1.PodFailed, corev1.PodSucceeded:
		return true, fmt.Errorf("kubernetes: pod %s ended as it started: %s%s", p.Name, p.Status.Phase, terminated(p))
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true, &errPending{msg: fmt.Sprintf("pod %s cannot be scheduled: %s", p.Name, c.Message)}
		}
	}
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		switch w.Reason {
		case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
			kind := driver.ErrImageNotFound
			m := strings.ToLower(w.Message)
			if strings.Contains(m, "unauthorized") || strings.Contains(m, "authentication") || strings.Contains(m, "denied") {
				kind = driver.ErrRegistryAuth
			}
			return true, fmt.Errorf("%w: pod %s cannot pull image %s: %s: %s", kind, p.Name, cs.Image, w.Reason, w.Message)
		case "CreateContainerConfigError", "CreateContainerError", "RunContainerError":
			return true, fmt.Errorf("kubernetes: pod %s: container cannot start: %s: %s", p.Name, w.Reason, w.Message)
		}
	}
	return false, nil
}

// sidecarExitedError is a sidecar container that stopped: the kubelet
// restarts it, but the worker would find it missing.
type sidecarExitedError struct {
	pod, container, image string
	code                  int32
	reason                string
	running               bool // it stopped while the pod's workers ran
}

func (e *sidecarExitedError) Error() string {
	when := ""
	if e.running {
		when = " while the pod was in use (the kubelet restarts it)"
	}
	return fmt.Sprintf("pod %s: sidecar %s (%s) exited with exit code %d (%s)%s", e.pod, e.container, e.image, e.code, e.reason, when)
}

func (e *sidecarExitedError) Unwrap() error { return driver.ErrSidecarExited }

// sidecarExited is the first sidecar of p that has stopped, nil if none.
func sidecarExited(p *corev1.Pod) error {
	for _, cs := range p.Status.InitContainerStatuses {
		if !strings.HasPrefix(cs.Name, "sidecar-") {
			continue
		}
		t := cs.State.Terminated
		if t == nil {
			t = cs.LastTerminationState.Terminated
		}
		if t != nil {
			return &sidecarExitedError{pod: p.Name, container: cs.Name, image: cs.Image, code: t.ExitCode, reason: t.Reason}
		}
	}
	return nil
}

// terminated describes why a pod's container ended, "" if it has not.
func terminated(p *corev1.Pod) string {
	var parts []string
	if p.Status.Reason != "" {
		parts = append(parts, p.Status.Reason)
	}
	if p.Status.Message != "" {
		parts = append(parts, p.Status.Message)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			parts = append(parts, fmt.Sprintf("container %s exited with %d (%s)", cs.Name, t.ExitCode, t.Reason))
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			parts = append(parts, "disrupted: "+c.Reason+" "+c.Message)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// oomKilled reports whether the pod's agent container was killed for
// memory.
func (h *Host) oomKilled(name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := h.cs.CoreV1().Pods(h.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.Reason == "OOMKilled" {
			return true
		}
	}
	return false
}

// agentLog is the end of the agents' log in pod, for errors.
func (h *Host) agentLog(pod, id string) string {
	s, err := h.exec(pod, []string{"sh", "-c", `tail -c 2000 ` + agentDir + `/agent-` + id + `.log 2>&1`})
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer s.Close()
	s.CloseWrite()
	b, _ := io.ReadAll(io.LimitReader(s, 4000))
	return strings.TrimSpace(string(b))
}

// classify wraps API errors in the driver's classes and says what a
// forbidden request lacked.
func (h *Host) classify(err error) error {
	var se apierrors.APIStatus
	switch {
	case apierrors.IsForbidden(err):
		if errors.As(err, &se) {
			d := se.Status().Details
			if d != nil {
				return fmt.Errorf("%w: %w (grant the role the verbs of docs/kubernetes.md, \"RBAC\", on %s in namespace %s)", driver.ErrAuth, err, d.Kind, h.ns)
			}
		}
		return fmt.Errorf("%w: %w", driver.ErrAuth, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w: %w", driver.ErrAuth, err)
	case apierrors.IsNotFound(err), apierrors.IsInvalid(err), apierrors.IsAlreadyExists(err), apierrors.IsConflict(err), apierrors.IsBadRequest(err):
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if _, ok := err.(apierrors.APIStatus); ok {
		return err
	}
	return fmt.Errorf("%w: %w", driver.ErrUnreachable, err)
}

// nodeFits says whether a node's allocatable resources can hold r, and
// otherwise what it has.
func nodeFits(n *corev1.Node, res corev1.ResourceRequirements) (int, string) {
	alloc := n.Status.Allocatable
	count := math.MaxInt
	var names []corev1.ResourceName
	for name := range res.Requests {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return names[i] < names[j] })
	for _, name := range names {
		want := res.Requests[name]
		have, ok := alloc[name]
		if want.IsZero() {
			continue
		}
		if !ok || have.Cmp(want) < 0 {
			count = 0
			continue
		}
		count = min(count, int(have.MilliValue()/max(want.MilliValue(), 1)))
	}
	if count == math.MaxInt {
		count = 1
	}
	return count, describeNode(n)
}

// describeNode is what a node has, for errors.
func describeNode(n *corev1.Node) string {
	a := n.Status.Allocatable
	s := fmt.Sprintf("node %s: cpu %s, memory %s", n.Name, a.Cpu().String(), driver.Bytes(a.Memory().Value()))
	if g, ok := a[GPUResource]; ok && !g.IsZero() {
		s += ", " + string(GPUResource) + " " + g.String()
	} else {
		s += ", no GPUs"
	}
	if e, ok := a[corev1.ResourceEphemeralStorage]; ok {
		s += ", ephemeral-storage " + driver.Bytes(e.Value())
	}
	if n.Spec.Unschedulable {
		s += " (cordoned)"
	}
	return s
}

// cpuEnv gives the agent container its CPU request through the Downward
// API: to the agent (agentproto.EnvMilliCPUs; without a CPU limit the pod
// sees every CPU of its node) and, rounded up to whole CPUs, to Go's
// runtime (GOMAXPROCS), which the agent's workers inherit.
func cpuEnv() []corev1.EnvVar {
	ref := func(divisor string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
			ContainerName: containerName, Resource: "requests.cpu", Divisor: resource.MustParse(divisor)}}
	}
	return []corev1.EnvVar{{Name: agentproto.EnvMilliCPUs, ValueFrom: ref("1m")}, {Name: "GOMAXPROCS", ValueFrom: ref("1")}}
}

// maxPorts bounds the ports of one worker: each is a host port of the pod
// (a rule of the node's port mapping).
const maxPorts = 256

// addPorts exposes ports ("N" or "N-M") as host ports of the agent
// container: the node's ports, reachable on its addresses while the pod
// runs, as on the machines of other hosts. A Service could not take the
// port numbers asked for (node ports come from the cluster's range).
func addPorts(c *corev1.Container, specs []string) error {
	n := 0
	for _, s := range specs {
		a, b, ok := driver.PortRange(s)
		if !ok {
			return fmt.Errorf("kubernetes: invalid port %q: want a port number or a range like 8080-8089", s)
		}
		for port := a; port <= b; port++ {
			if n++; n > maxPorts {
				return fmt.Errorf("kubernetes: ports %s: %w: at most %d ports per worker (each is a host port of its pod)", strings.Join(specs, ","), driver.ErrUnsupported, maxPorts)
			}
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: fmt.Sprintf("p%d", port), ContainerPort: int32(port), HostPort: int32(port), Protocol: corev1.ProtocolTCP})
		}
	}
	return nil
}

// addSidecars adds the sidecars as native sidecar containers (init
// containers that restart always): they start before the agent's
// container, share the pod's network (the worker reaches them on
// localhost, as meadowrun-sidecar-N and by their names) and stop after it.
func addSidecars(p *corev1.Pod, scs []driver.Container) error {
	if len(scs) == 0 {
		return nil
	}
	always := corev1.ContainerRestartPolicyAlways
	alias := corev1.HostAlias{IP: "127.0.0.1"}
	for i, sc := range scs {
		if sc.Credentials != nil {
			return fmt.Errorf("kubernetes: sidecar %d (%s): registry credentials are %w: give the pods an imagePullSecret (PodCustomization) or the service account one", i, sc.Image, driver.ErrUnsupported)
		}
		c := corev1.Container{Name: fmt.Sprintf("sidecar-%d", i), Image: sc.Image, Args: sc.Args,
			ImagePullPolicy: corev1.PullIfNotPresent, RestartPolicy: &always}
		for _, k := range slices.Sorted(maps.Keys(sc.Env)) {
			c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: sc.Env[k]})
		}
		p.Spec.InitContainers = append(p.Spec.InitContainers, c)
		alias.Hostnames = append(alias.Hostnames, fmt.Sprintf("meadowrun-sidecar-%d", i))
		if sc.Name != "" {
			alias.Hostnames = append(alias.Hostnames, sc.Name)
		}
	}
	p.Spec.HostAliases = append(p.Spec.HostAliases, alias)
	return nil
}

// DefaultSpotNodeLabels are the node labels of interruptible (spot,
// preemptible) capacity on EKS, GKE and AKS: a label with its value ("" for
// any value).
var DefaultSpotNodeLabels = map[string]string{
	"eks.amazonaws.com/capacityType":        "SPOT",
	"cloud.google.com/gke-spot":             "true",
	"cloud.google.com/gke-preemptible":      "true",
	"kubernetes.azure.com/scalesetpriority": "spot",
}

// DefaultSpotTaints are the taints of interruptible nodes: AKS puts the
// first on spot node pools, GKE the others where asked to.
var DefaultSpotTaints = []corev1.Taint{
	{Key: "kubernetes.azure.com/scalesetpriority", Value: "spot", Effect: corev1.TaintEffectNoSchedule},
	{Key: "cloud.google.com/gke-spot", Value: "true", Effect: corev1.TaintEffectNoSchedule},
	{Key: "cloud.google.com/gke-preemptible", Value: "true", Effect: corev1.TaintEffectNoSchedule},
}

// addEvictionRules maps a worker's MaxEvictionRate to node selection: 0
// (OnDemandOnly) requires nodes without the spot labels; more tolerates
// the spot taints, so that the pod may go to interruptible nodes too.
func (h *Host) addEvictionRules(p *corev1.Pod, rate float64) {
	labels := h.opts.SpotNodeLabels
	if labels == nil {
		labels = DefaultSpotNodeLabels
	}
	taints := h.opts.SpotTaints
	if taints == nil {
		taints = DefaultSpotTaints
	}
	if rate == 0 {
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			r := corev1.NodeSelectorRequirement{Key: k, Operator: corev1.NodeSelectorOpDoesNotExist}
			if v := labels[k]; v != "" {
				r = corev1.NodeSelectorRequirement{Key: k, Operator: corev1.NodeSelectorOpNotIn, Values: []string{v}}
			}
			p.Spec.Affinity = addNodeRequirement(p.Spec.Affinity, r)
		}
		return
	}
	for _, t := range taints {
		tol := corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpEqual, Value: t.Value, Effect: t.Effect}
		if t.Value == "" {
			tol.Operator, tol.Value = corev1.TolerationOpExists, ""
		}
		p.Spec.Tolerations = append(p.Spec.Tolerations, tol)
	}
}

// nodeExcludes says why the pod p can never go to node n: a required node
// label it lacks or has (flags, spot nodes), or a taint p does not
// tolerate; "" when none. It reads the requirements meadowrun writes
// (node affinity with In, NotIn, Exists, DoesNotExist; node selector); a
// node that a pod customization's other rules exclude is left to the
// scheduler.
func nodeExcludes(n *corev1.Node, p *corev1.Pod) string {
	for k, v := range p.Spec.NodeSelector {
		if n.Labels[k] != v {
			return fmt.Sprintf("the pod selects %s=%s", k, v)
		}
	}
	if a := p.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		var whys []string
		for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			why := termExcludes(n, t)
			if why == "" {
				whys = nil
				break
			}
			whys = append(whys, why)
		}
		if len(whys) > 0 {
			return strings.Join(whys, " or ")
		}
	}
	for i := range n.Spec.Taints {
		t := &n.Spec.Taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule || strings.HasPrefix(t.Key, "node.kubernetes.io/") {
			// Preferences, and the node's conditions (cordoned, not
			// ready), which pass.
			continue
		}
		if !slices.ContainsFunc(p.Spec.Tolerations, func(tol corev1.Toleration) bool { return tol.ToleratesTaint(logr.Discard(), t, false) }) {
			return "taint " + t.ToString() + " not tolerated"
		}
	}
	return ""
}

// termExcludes says which requirement of t node n fails, "" if none.
func termExcludes(n *corev1.Node, t corev1.NodeSelectorTerm) string {
	for _, r := range t.MatchExpressions {
		v, has := n.Labels[r.Key]
		ok := true
		switch r.Operator {
		case corev1.NodeSelectorOpExists:
			ok = has
		case corev1.NodeSelectorOpDoesNotExist:
			ok = !has
		case corev1.NodeSelectorOpIn:
			ok = has && slices.Contains(r.Values, v)
		case corev1.NodeSelectorOpNotIn:
			ok = !has || !slices.Contains(r.Values, v)
		}
		if !ok {
			if has {
				return fmt.Sprintf("label %s=%s, the pod requires %s %s %v", r.Key, v, r.Key, r.Operator, r.Values)
			}
			return fmt.Sprintf("no label %s, the pod requires %s %s %v", r.Key, r.Key, r.Operator, r.Values)
		}
	}
	return ""
}
