package kubernetes_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/fakegcs"
	"github.com/meadowrun-go/meadowrun/internal/k8shost"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

// k8sMirror returns its argument reversed, each byte flipped: a result as
// large as the argument, that depends on all of it.
var k8sMirror = meadowrun.Register("k8s.Mirror", func(ctx context.Context, b []byte) ([]byte, error) {
	return mirror(b), nil
})

func mirror(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c ^ 0x5a
	}
	return out
}

// valueSize is the size of each argument and result of the maps below.
const valueSize = 3 << 20

// bigArgs are the arguments of a map of three tasks: two share one.
func bigArgs() [][]byte {
	a := bytes.Repeat([]byte("argument A "), valueSize/11+1)[:valueSize]
	b := bytes.Repeat([]byte("argument B "), valueSize/11+1)[:valueSize]
	return [][]byte{a, b, a}
}

// runBigMap runs k8sMirror over bigArgs on h (one worker, so one pod)
// and checks that each result is right and delivered exactly once.
func runBigMap(t *testing.T, h *meadowrun.Host) {
	t.Helper()
	args := bigArgs()
	seen := make([]int, len(args))
	for r := range meadowrun.RunMapAsCompleted(context.Background(), k8sMirror, args, h, &meadowrun.MapOptions{
		Options:     meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{LogicalCPU: 0.2, MemoryGB: 0.5}},
		Concurrency: 1}) {
		if r.TaskID < 0 || r.TaskID >= len(args) {
			t.Fatalf("result of task %d: %v", r.TaskID, r.Err)
		}
		seen[r.TaskID]++
		if r.Err != nil {
			t.Errorf("task %d: %v", r.TaskID, r.Err)
		} else if !bytes.Equal(r.Value, mirror(args[r.TaskID])) {
			t.Errorf("task %d: a result of %d bytes that is not its argument's mirror", r.TaskID, len(r.Value))
		}
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("task %d delivered %d times, want once", i, n)
		}
	}
}

// checkThroughBucket runs the map and checks that its values went
// through the bucket behind p, not through the API server: the two
// distinct arguments written once each, downloaded by the pod for each
// task, the three results uploaded by the pod and read back by the
// client, and the exec streams carrying less than one value.
func checkThroughBucket(t *testing.T, h *meadowrun.Host, p *storeProxy, write string) {
	t.Helper()
	exec0, fromBucket0 := k8shost.ExecStreamBytes(), k8shost.ResultBytesFromBuckets()
	runBigMap(t, h)
	if n := p.requests(write, k8shost.ArgPrefix); n != 2 {
		t.Errorf("%d arguments written to the bucket, want the 2 distinct ones", n)
	}
	if n := p.requests(http.MethodGet, k8shost.ArgPrefix); n != 3 {
		t.Errorf("%d downloads of arguments, want one per task (3)", n)
	}
	if n := p.requests(write, k8shost.ResultPrefix); n != 3 {
		t.Errorf("%d results uploaded to the bucket, want 3", n)
	}
	if n := k8shost.ResultBytesFromBuckets() - fromBucket0; n != 3*valueSize {
		t.Errorf("%d bytes of results read from the bucket, want %d", n, 3*valueSize)
	}
	if n := k8shost.ExecStreamBytes() - exec0; n >= valueSize {
		t.Errorf("the API server's exec streams carried %d bytes, want less than one value (%d)", n, valueSize)
	} else {
		t.Logf("exec streams carried %d bytes for %d bytes of arguments and results", n, 6*valueSize)
	}
	if n := p.requests(http.MethodDelete, k8shost.ResultPrefix); n != 3 {
		t.Errorf("%d results deleted, want each of the 3 once read", n)
	}
}

// Arguments and results of a few MiB go through an S3-compatible bucket
// (moto_server), and nothing of the job is left there once the host is
// closed; a pod that cannot reach the bucket gets and sends them through
// the API server, and the log says why.
func TestStorageBucketS3Values(t *testing.T) {
	c := k8stest.Require(t)
	ctx := context.Background()
	const name = "meadowrun-values"
	p, s3c, spec := s3TestBucket(t, c, name, "meadowrun-test-values")
	left := func(prefix string) []string {
		out, err := s3c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(name), Prefix: aws.String(prefix)})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
		return keys
	}

	log := &hosttest.SyncBuffer{}
	h := newK8s(t, c, kubernetes.Options{SingleUsePods: true, StorageSpec: spec, Log: log})
	checkThroughBucket(t, h, p, http.MethodPut)
	if keys := left(k8shost.ResultPrefix); len(keys) != 0 {
		t.Errorf("results left in the bucket after the job: %v", keys)
	}
	if keys := left(k8shost.ArgPrefix); len(keys) != 2 {
		t.Errorf("arguments in the bucket while the host is open: %v, want the 2", keys)
	}
	h.Close()
	if keys := left("meadowrun/"); len(keys) != 1 || !strings.HasPrefix(keys[0], "meadowrun/content/") {
		t.Errorf("objects in the bucket after Close: %v, want the program's alone", keys)
	}
	if t.Failed() {
		t.Logf("host log:\n%s", log)
	}

	t.Run("a pod that cannot reach the bucket", func(t *testing.T) {
		l, err := net.Listen("tcp", net.JoinHostPort(nodeIP(t, c), "0"))
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + l.Addr().String()
		l.Close()
		log := &hosttest.SyncBuffer{}
		bad := spec
		bad.EndpointURLInCluster = closed
		h := newK8s(t, c, kubernetes.Options{SingleUsePods: true, StorageSpec: bad, Log: log})
		runBigMap(t, h)
		for _, want := range []string{"could not download an argument", "could not upload a result", "through the stream"} {
			if !strings.Contains(log.String(), want) {
				t.Errorf("the host's log does not say %q:\n%s", want, log)
			}
		}
		if strings.Contains(log.String(), "X-Amz-Signature") {
			t.Errorf("the host's log shows a signature:\n%s", log)
		}
		t.Logf("host log: %s", log)
		h.Close()
		if keys := left("meadowrun/"); len(keys) != 1 {
			t.Errorf("objects in the bucket after Close: %v, want the program's alone", keys)
		}
	})
	t.Run("the URL", func(t *testing.T) {
		u := "k8s://?" + url.Values{"namespace": {c.Namespace}, "kubeconfig": {c.KubeConfig}, "large_value_bytes": {"x"}}.Encode()
		if _, err := meadowrun.OpenHost(ctx, u); err == nil || !strings.Contains(err.Error(), "needs storage=s3") {
			t.Fatalf("large_value_bytes without storage: %v", err)
		}
		u = "k8s://?" + url.Values{"namespace": {c.Namespace}, "kubeconfig": {c.KubeConfig}, "storage": {"s3"}, "bucket": {name},
			"endpoint": {p.URL}, "secret": {spec.UsernamePasswordSecret}, "large_value_bytes": {"lots"}}.Encode()
		if _, err := meadowrun.OpenHost(ctx, u); err == nil || !strings.Contains(err.Error(), "number of bytes") {
			t.Fatalf("large_value_bytes=lots: %v", err)
		}
		if _, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: c.KubeConfig, Namespace: c.Namespace, LargeValueBytes: 1}); err == nil ||
			!strings.Contains(err.Error(), "needs a StorageSpec") {
			t.Fatalf("LargeValueBytes without a bucket: %v", err)
		}
	})
	t.Run("values below the threshold go through the API server", func(t *testing.T) {
		h := newK8s(t, c, kubernetes.Options{SingleUsePods: true, StorageSpec: spec, LargeValueBytes: 2 * valueSize})
		args0, exec0 := p.requests(http.MethodPut, k8shost.ArgPrefix), k8shost.ExecStreamBytes()
		runBigMap(t, h)
		if n := p.requests(http.MethodPut, k8shost.ArgPrefix) - args0; n != 0 {
			t.Errorf("%d arguments written to the bucket, want none below LargeValueBytes", n)
		}
		if n := k8shost.ExecStreamBytes() - exec0; n < 6*valueSize {
			t.Errorf("the exec streams carried %d bytes, want the %d of the values", n, 6*valueSize)
		}
	})
}

// The same through Google Cloud Storage (fake-gcs-server): the pod
// uploads results with media uploads.
func TestStorageBucketGCSValues(t *testing.T) {
	c := k8stest.Require(t)
	s := fakegcs.Start(t, "127.0.0.1")
	s.CreateBucket(t, "meadowrun-values")
	p := newStoreProxy(t, nodeIP(t, c), s.URL)
	log := &hosttest.SyncBuffer{}
	h := newK8s(t, c, kubernetes.Options{SingleUsePods: true, Log: log,
		StorageSpec: kubernetes.GoogleBucketSpec{Bucket: "meadowrun-values", EmulatorEndpoint: p.URL}})
	checkThroughBucket(t, h, p, http.MethodPost)
	h.Close()
	resp, err := http.Get(s.URL + "/storage/v1/b/meadowrun-values/o?prefix=meadowrun/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range list.Items {
		names = append(names, o.Name)
	}
	if len(names) != 1 || !strings.HasPrefix(names[0], "meadowrun/content/") {
		t.Errorf("objects in the bucket after Close: %v, want the program's alone", names)
	}
	if t.Failed() {
		t.Logf("host log:\n%s", log)
	}
}

// The conformance suite on a host whose values of 100 bytes or more travel
// through an S3-compatible bucket (moto_server): the worker protocol
// through the agent's relay (cancellation, output, commands, failures,
// lost workers) behaves as on any host.
func TestConformanceKubernetesBucket(t *testing.T) {
	c := k8stest.Require(t)
	p, _, spec := s3TestBucket(t, c, "meadowrun-suite", "meadowrun-test-suite-bucket")
	hosttest.Run(t, hosttest.Config{
		NewHost: func(t *testing.T) *meadowrun.Host {
			return newK8s(t, c, kubernetes.Options{ContainerMounts: []string{os.TempDir() + ":" + os.TempDir()},
				StorageSpec: spec, LargeValueBytes: 100})
		},
		MillionTasks: millionTasks / 10,
	})
	if n := p.requests(http.MethodPut, k8shost.ResultPrefix); n == 0 {
		t.Errorf("no result of the suite went through the bucket")
	}
	t.Logf("%d arguments and %d results through the bucket", p.requests(http.MethodPut, k8shost.ArgPrefix), p.requests(http.MethodPut, k8shost.ResultPrefix))
}
