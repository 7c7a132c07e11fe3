// Package kubernetes makes a Kubernetes cluster a meadowrun host: workers
// run in pods sized by their Resources (requests and limits), each pod
// runs meadowrun's agent, and the program reaches a pod by content (never
// twice while unchanged) through the API server, like every stream of the
// worker protocol: exec sessions, no Service, node port or inbound port
// (a job's own Ports are host ports of its pod, for the job only).
// Sidecars are native sidecar containers of the worker's pod.
// It uses client-go only; kubectl is not needed.
//
// Importing the package registers the k8s:// scheme of meadowrun.OpenHost:
//
//	k8s://[CONTEXT]?namespace=NS&kubeconfig=FILE&image=IMAGE&reusable=false&idle=5m&schedule_timeout=2m&mount=NODE_PATH:PATH&jobs_volume=PVC&jobs_service_account=SA
//
// with, for spot nodes (Options.SpotNodeLabels, SpotTaints), any number
// of spot_label=KEY=VALUE (KEY alone for any value) and
// spot_taint=KEY=VALUE:EFFECT (KEY:EFFECT for any value; EFFECT may be
// left out for any effect), each given once empty (spot_label=,
// spot_taint=) for none, and neither for the defaults;
//
// with, for a storage bucket, storage=s3&bucket=B&endpoint=URL&
// endpoint_in_cluster=URL&secret=SECRET&region=R or storage=gcs&bucket=B,
// and large_value_bytes=N.
//
// See docs/kubernetes.md.
package kubernetes

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/k8shost"
)

// Options configure NewHost: the reference's Kubernetes host
// (kube_config_context, kubernetes_namespace, reusable_pods,
// pod_customization) and what a Go program needs besides. The zero value
// uses the current context of $KUBECONFIG or ~/.kube/config, its
// namespace (else "default"), image DefaultImage and reusable pods.
type Options struct {
	// KubeConfig is the kubeconfig file; "" means $KUBECONFIG, else
	// ~/.kube/config, else, in a pod of the cluster, the pod's service
	// account (in-cluster configuration; Context is then ignored).
	KubeConfig string
	// Context is the kubeconfig context (kube_config_context); "" means
	// the current one.
	Context string
	// Namespace is where pods are created (kubernetes_namespace); "" means
	// the context's namespace, else "default".
	Namespace string
	// Image is the image of worker pods, for deployments that name none:
	// it needs a POSIX sh and cat, and the C library when the program was
	// built with cgo (build with CGO_ENABLED=0 to use any image with a
	// shell). "" means DefaultImage. A container deployment's image is
	// used instead when a job has one.
	Image string
	// SingleUsePods (reusable_pods=False) gives each worker a pod of its
	// own, removed when the worker ends. By default pods are reusable:
	// a pod serves later workers of the same pod spec, of this process or
	// of another, until it has been idle for IdleTimeout.
	SingleUsePods bool
	// IdleTimeout is how long a reusable pod waits without a client or a
	// worker before it ends (and its Job removes it); 0 means 5 minutes.
	IdleTimeout time.Duration
	// ScheduleTimeout is how long a pod may stay unschedulable before
	// the job fails with the scheduler's message; 0 means 2 minutes.
	ScheduleTimeout time.Duration
	// FlagLabels maps Resources.Flags to node labels that a pod then
	// requires (node affinity, label exists); a flag it does not name
	// requires the label "meadowrun.dev/FLAG".
	FlagLabels map[string]string
	// SpotNodeLabels are the node labels of interruptible (spot,
	// preemptible) nodes, label to value ("" for any value): a worker
	// with Resources.OnDemandOnly (MaxEvictionRate 0) requires nodes
	// without them. nil means DefaultSpotNodeLabels (EKS, GKE and AKS);
	// an empty map turns the exclusion off.
	SpotNodeLabels map[string]string
	// SpotTaints are the taints of interruptible nodes: a worker whose
	// MaxEvictionRate is above 0 (the default, 80) tolerates them, so
	// that it may run there. A taint without a value is tolerated
	// whatever its value. nil means DefaultSpotTaints (AKS's and GKE's);
	// an empty slice tolerates none.
	SpotTaints []corev1.Taint
	// ContainerMounts are hostPath volumes of every worker pod (data on
	// the nodes a job reads, a directory it writes to):
	// "NODE_PATH:CONTAINER_PATH", with ":ro" for read-only.
	ContainerMounts []string
	// PodCustomization (pod_customization) edits every pod before it is
	// created: a service account, node selectors, tolerations, volumes.
	// Pods are shared only between identical pod specs and labels. It is
	// also called on a pod that is not created, to see which nodes it
	// could use (Fit).
	PodCustomization func(*corev1.Pod) error
	// StorageSpec (storage_spec), when not nil, is the bucket pods fetch
	// the program from: GenericStorageBucketSpec or GoogleBucketSpec.
	// Large task arguments and results travel through it too.
	StorageSpec StorageBucketSpec
	// LargeValueBytes is, with a StorageSpec, the size from which a
	// task's argument or result travels through the bucket rather than
	// the API server (large_value_bytes= in URLs); 0 means 1 MiB,
	// negative never.
	LargeValueBytes int64
	// Binaries are this program built for other platforms, by
	// "GOOS/GOARCH"; nodes are linux/amd64 today.
	Binaries map[string]string
	// Log receives a line per pod problem; nil means standard error.
	Log io.Writer
	// JobsVolume names a PersistentVolumeClaim of the namespace that
	// keeps durable jobs (SubmitFunction, SubmitMap, SubmitCommand, the
	// CLI's --detach) in the cluster: each is supervised by a pod of a
	// batch Job that Kubernetes restarts, with its journal on the volume,
	// so that the job goes on when the client exits and resumes when its
	// supervisor's pod is deleted. "" means such jobs are supervised on
	// the submitting machine. See docs/kubernetes.md.
	JobsVolume string
	// JobsServiceAccount is the service account of the supervisors'
	// pods, which create the jobs' worker pods (its Role is in
	// docs/kubernetes.md); "" means the namespace's default.
	JobsServiceAccount string
}

// DefaultImage is the image of worker pods when Options.Image is "".
const DefaultImage = k8shost.DefaultImage

// DefaultSpotNodeLabels are the labels of spot nodes on EKS
// (eks.amazonaws.com/capacityType=SPOT), GKE (cloud.google.com/gke-spot=true,
// cloud.google.com/gke-preemptible=true) and AKS
// (kubernetes.azure.com/scalesetpriority=spot). Do not modify it.
var DefaultSpotNodeLabels = k8shost.DefaultSpotNodeLabels

// DefaultSpotTaints are the taints of spot nodes: AKS's
// kubernetes.azure.com/scalesetpriority=spot:NoSchedule, and GKE's
// cloud.google.com/gke-spot=true:NoSchedule and
// cloud.google.com/gke-preemptible=true:NoSchedule. Do not modify it.
var DefaultSpotTaints = k8shost.DefaultSpotTaints

// NewHost connects to the cluster (it checks the kubeconfig, that the API
// server answers and that the namespace exists) and returns it as a host.
// Pods are created when work runs. Close kills the host's workers and
// removes its single-use pods; reusable pods end after their idle timeout.
func NewHost(ctx context.Context, opts Options) (*meadowrun.Host, error) {
	h, err := newHost(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	return h, nil
}

func newHost(ctx context.Context, opts Options) (*meadowrun.Host, error) {
	var storage *k8shost.StorageSpec
	if opts.StorageSpec != nil {
		storage = opts.StorageSpec.spec()
		storage.MinValueBytes = opts.LargeValueBytes
	} else if opts.LargeValueBytes != 0 {
		return nil, fmt.Errorf("kubernetes: LargeValueBytes needs a StorageSpec: without a bucket every value goes through the API server")
	}
	ko := k8shost.Options{Storage: storage, KubeConfig: opts.KubeConfig, Context: opts.Context, Namespace: opts.Namespace,
		Image: opts.Image, SingleUsePods: opts.SingleUsePods, IdleTimeout: opts.IdleTimeout, ScheduleTimeout: opts.ScheduleTimeout,
		FlagLabels: opts.FlagLabels, SpotNodeLabels: opts.SpotNodeLabels, SpotTaints: opts.SpotTaints, ContainerMounts: opts.ContainerMounts, Customize: opts.PodCustomization, Binaries: opts.Binaries, Log: opts.Log,
		JobsVolume: opts.JobsVolume, JobsServiceAccount: opts.JobsServiceAccount}
	rebuildable := opts.PodCustomization == nil && len(opts.FlagLabels) == 0 && len(opts.Binaries) == 0
	d, err := k8shost.New(ctx, ko)
	if err != nil {
		return nil, err
	}
	if rebuildable && opts.JobsVolume != "" {
		// A supervisor in the cluster opens it with its pod's service
		// account, and supervises nothing itself.
		in := opts
		in.KubeConfig, in.Context, in.JobsVolume, in.JobsServiceAccount = "", "", "", ""
		d.SetClusterURL(k8sURL(in, "", d.Namespace()))
	}
	u := k8sURL(opts, d.Context(), d.Namespace())
	if !rebuildable {
		// Another process could not rebuild the host from a URL.
		u = ""
	}
	return meadowrun.NewHost(d.Keeping(), meadowrun.HostOptions{URL: u, Digest: d.ExpectedDigest()}), nil
}

func k8sURL(o Options, context, ns string) string {
	q := url.Values{}
	q.Set("namespace", ns)
	if o.KubeConfig != "" {
		q.Set("kubeconfig", o.KubeConfig)
	}
	if o.Image != "" {
		q.Set("image", o.Image)
	}
	if o.SingleUsePods {
		q.Set("reusable", "false")
	}
	if o.IdleTimeout > 0 {
		q.Set("idle", o.IdleTimeout.String())
	}
	if o.ScheduleTimeout > 0 {
		q.Set("schedule_timeout", o.ScheduleTimeout.String())
	}
	for _, m := range o.ContainerMounts {
		q.Add("mount", m)
	}
	if o.JobsVolume != "" {
		q.Set("jobs_volume", o.JobsVolume)
	}
	if o.JobsServiceAccount != "" {
		q.Set("jobs_service_account", o.JobsServiceAccount)
	}
	spotQuery(q, o.SpotNodeLabels, o.SpotTaints)
	storageQuery(q, o.StorageSpec)
	if o.LargeValueBytes != 0 {
		q.Set("large_value_bytes", strconv.FormatInt(o.LargeValueBytes, 10))
	}
	return "k8s://" + url.PathEscape(context) + "?" + q.Encode()
}

// openK8s opens k8s://[CONTEXT]?namespace=...&kubeconfig=...&image=...&
// reusable=...&idle=...&schedule_timeout=...
func openK8s(ctx context.Context, u *url.URL) (*meadowrun.Host, error) {
	o, err := optionsOf(u)
	if err != nil {
		return nil, err
	}
	return newHost(ctx, o)
}

// optionsOf are the options of a k8s:// URL.
func optionsOf(u *url.URL) (Options, error) {
	o := Options{}
	o.Context, _ = url.PathUnescape(u.Host)
	q := u.Query()
	for k := range q {
		switch k {
		case "namespace", "kubeconfig", "image", "reusable", "idle", "schedule_timeout", "mount", "jobs_volume", "jobs_service_account", "spot_label", "spot_taint":
		default:
			if slices.Contains(storageParams, k) {
				continue
			}
			return o, fmt.Errorf("unknown parameter %q (want namespace, kubeconfig, image, reusable, idle, schedule_timeout, mount, jobs_volume, jobs_service_account, spot_label, spot_taint, %s)", k, strings.Join(storageParams, ", "))
		}
	}
	var err error
	if o.StorageSpec, err = storageFromQuery(q); err != nil {
		return o, err
	}
	if o.SpotNodeLabels, o.SpotTaints, err = spotFromQuery(q); err != nil {
		return o, err
	}
	o.Namespace, o.KubeConfig, o.Image, o.ContainerMounts = q.Get("namespace"), q.Get("kubeconfig"), q.Get("image"), q["mount"]
	o.JobsVolume, o.JobsServiceAccount = q.Get("jobs_volume"), q.Get("jobs_service_account")
	if v := q.Get("large_value_bytes"); v != "" {
		if o.LargeValueBytes, err = strconv.ParseInt(v, 10, 64); err != nil {
			return o, fmt.Errorf("large_value_bytes=%q: want a number of bytes (negative: never)", v)
		}
	}
	if v := q.Get("reusable"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return o, fmt.Errorf("reusable=%q: want true or false", v)
		}
		o.SingleUsePods = !b
	}
	for name, d := range map[string]*time.Duration{"idle": &o.IdleTimeout, "schedule_timeout": &o.ScheduleTimeout} {
		if v := q.Get(name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil {
				return o, fmt.Errorf("%s=%q: %w", name, v, err)
			}
			*d = x
		}
	}
	return o, nil
}

func init() {
	meadowrun.RegisterHostScheme("k8s", openK8s)
}
