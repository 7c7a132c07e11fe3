package kubernetes_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/bucket"
	"github.com/meadowrun-go/meadowrun/internal/fakegcs"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/internal/mototest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

var k8sReadFile = meadowrun.Register("k8s.ReadFile", func(ctx context.Context, path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
})

// storeProxy is a reverse proxy to an object store on the node's
// address, which pods reach, that counts requests by method and path.
type storeProxy struct {
	URL string
	mu  sync.Mutex
	n   map[string]int // "METHOD PATH"
	// objs are the requests, as "METHOD PATH NAME" (NAME: a Google
	// upload's object, from the query).
	objs []string
}

// requests counts the requests of method whose path or object name
// contains part.
func (p *storeProxy) requests(method, part string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, o := range p.objs {
		m, rest, _ := strings.Cut(o, " ")
		if m == method && strings.Contains(rest, part) {
			n++
		}
	}
	return n
}

func (p *storeProxy) count(method, path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[method+" "+path]
}

func newStoreProxy(t *testing.T, ip, target string) *storeProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := &storeProxy{URL: "http://" + l.Addr().String(), n: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.n[r.Method+" "+r.URL.Path]++
		p.objs = append(p.objs, r.Method+" "+r.URL.Path+" "+r.URL.Query().Get("name"))
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p
}

// selfSHA is this program's path and sha256: what pods run.
func selfSHA(t *testing.T) (string, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	prog, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	return exe, fmt.Sprintf("%x", sha256.Sum256(prog))
}

// nodeIP is the test node's internal address: pods reach this machine
// there.
func nodeIP(t *testing.T, c k8stest.Cluster) string {
	t.Helper()
	n, err := client(t, c).CoreV1().Nodes().Get(context.Background(), c.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	t.Fatalf("node %s has no internal address", c.Node)
	return ""
}

// An S3-compatible bucket (moto_server's S3) with its key pair in a
// Secret: the program is written to it once, and each new pod downloads
// it from there with a presigned URL rather than through the API server.
func TestStorageBucketS3(t *testing.T) {
	c := k8stest.Require(t)
	ctx := context.Background()
	const name = "meadowrun-programs"
	p, s3c, spec := s3TestBucket(t, c, name, "meadowrun-test-bucket")

	exe, sha := selfSHA(t)
	key := "/" + name + "/" + bucket.ContentKey(sha)

	log := &hosttest.SyncBuffer{}
	h := newK8s(t, c, kubernetes.Options{SingleUsePods: true, StorageSpec: spec, Log: log})
	if _, err := meadowrun.RunFunction(ctx, k8sWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if n := p.count(http.MethodPut, key); n != 1 {
		t.Errorf("the program was written %d times to the bucket, want once", n)
	}
	if n := p.count(http.MethodGet, key); n != 1 {
		t.Errorf("the pod downloaded the program %d times from the bucket, want once; host log:\n%s", n, log)
	}
	head, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(name), Key: aws.String(bucket.ContentKey(sha))})
	if st, _ := os.Stat(exe); err != nil || aws.ToInt64(head.ContentLength) != st.Size() {
		t.Fatalf("the program in the bucket: %v, %v bytes; want %d", err, head, st.Size())
	}

	t.Run("a host of another process writes nothing again and its pod downloads the program", func(t *testing.T) {
		h := newK8s(t, c, kubernetes.Options{SingleUsePods: true, StorageSpec: spec})
		if _, err := meadowrun.RunFunction(ctx, k8sWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		if n := p.count(http.MethodPut, key); n != 1 {
			t.Fatalf("the program was written %d times, want once", n)
		}
		if n := p.count(http.MethodGet, key); n != 2 {
			t.Fatalf("the program was downloaded %d times, want twice (a new pod of each host)", n)
		}
	})
	t.Run("the deployment's files come from the bucket", func(t *testing.T) {
		const path = "testdata/bucket-file.txt"
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fkey := "/" + name + "/" + bucket.ContentKey(fmt.Sprintf("%x", sha256.Sum256(want)))
		got, err := meadowrun.RunFunction(ctx, k8sReadFile.With(path), h,
			&meadowrun.Options{LogDir: t.TempDir(), Deployment: meadowrun.MirrorLocal([]string{path}, nil)})
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Fatalf("the task read %q, want %q", got, want)
		}
		if puts, gets := p.count(http.MethodPut, fkey), p.count(http.MethodGet, fkey); puts != 1 || gets != 1 {
			t.Fatalf("the file was written %d times and downloaded %d times, want once each; host log:\n%s", puts, gets, log)
		}
	})
	t.Run("a pod that cannot reach the bucket gets the program through the API server", func(t *testing.T) {
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
		if _, err := meadowrun.RunFunction(ctx, k8sWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), "could not download the program") || !strings.Contains(log.String(), "through the API server") {
			t.Fatalf("the host's log does not say why the pod did not download the program:\n%s", log)
		}
		t.Logf("host log: %s", log)
	})
	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			spec kubernetes.GenericStorageBucketSpec
			want []string
		}{
			{"a bucket that does not exist", kubernetes.GenericStorageBucketSpec{Bucket: "nope", EndpointURL: p.URL, UsernamePasswordSecret: spec.UsernamePasswordSecret},
				[]string{"nope", "does not exist"}},
			{"a secret that does not exist", kubernetes.GenericStorageBucketSpec{Bucket: name, EndpointURL: p.URL, UsernamePasswordSecret: "no-such-secret"},
				[]string{"no-such-secret", c.Namespace, "username and password"}},
			{"no endpoint", kubernetes.GenericStorageBucketSpec{Bucket: name}, []string{"endpoint"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: c.KubeConfig, Namespace: c.Namespace, StorageSpec: tc.spec})
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not mention %q", err, w)
					}
				}
			})
		}
		t.Run("a secret without a password", func(t *testing.T) {
			cs := client(t, c)
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "meadowrun-test-half"}, Data: map[string][]byte{"username": []byte("u")}}
			if _, err := cs.CoreV1().Secrets(c.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			defer cs.CoreV1().Secrets(c.Namespace).Delete(context.Background(), s.Name, metav1.DeleteOptions{})
			_, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: c.KubeConfig, Namespace: c.Namespace,
				StorageSpec: kubernetes.GenericStorageBucketSpec{Bucket: name, EndpointURL: p.URL, UsernamePasswordSecret: s.Name}})
			if err == nil || !strings.Contains(err.Error(), "lacks the key(s) password") {
				t.Fatalf("err = %v", err)
			}
		})
	})
	t.Run("the URL", func(t *testing.T) {
		u := "k8s://?" + url.Values{"namespace": {c.Namespace}, "kubeconfig": {c.KubeConfig}, "storage": {"s3"}, "bucket": {"nope"},
			"endpoint": {p.URL}, "secret": {spec.UsernamePasswordSecret}}.Encode()
		if _, err := meadowrun.OpenHost(ctx, u); !errors.Is(err, bucket.ErrNoBucket) {
			t.Fatalf("OpenHost(%s): %v, want the missing bucket's error", u, err)
		}
		if _, err := meadowrun.OpenHost(ctx, "k8s://?bucket=b"); err == nil || !strings.Contains(err.Error(), "storage=s3") {
			t.Fatalf("bucket without storage: %v", err)
		}
	})
}

// A Google Cloud Storage bucket (fake-gcs-server, without credentials):
// the program is written once and each new pod downloads it.
func TestStorageBucketGCS(t *testing.T) {
	c := k8stest.Require(t)
	ctx := context.Background()
	s := fakegcs.Start(t, "127.0.0.1")
	s.CreateBucket(t, "meadowrun-programs")
	p := newStoreProxy(t, nodeIP(t, c), s.URL)
	_, sha := selfSHA(t)
	key := bucket.ContentKey(sha)
	log := &hosttest.SyncBuffer{}
	h := newK8s(t, c, kubernetes.Options{SingleUsePods: true, Log: log,
		StorageSpec: kubernetes.GoogleBucketSpec{Bucket: "meadowrun-programs", EmulatorEndpoint: p.URL}})
	if _, err := meadowrun.RunFunction(ctx, k8sWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if n := p.count(http.MethodPost, "/upload/storage/v1/b/meadowrun-programs/o"); n != 1 {
		t.Errorf("the program was written %d times to the bucket, want once", n)
	}
	if n := p.count(http.MethodGet, "/storage/v1/b/meadowrun-programs/o/"+key); n != 2 {
		// The client's own look-up before writing, and the pod's download.
		t.Errorf("the object was read %d times, want twice (the client's look-up, the pod's download); host log:\n%s", n, log)
	}
	if _, err := kubernetes.NewHost(ctx, kubernetes.Options{KubeConfig: c.KubeConfig, Namespace: c.Namespace,
		StorageSpec: kubernetes.GoogleBucketSpec{Bucket: "nope", EmulatorEndpoint: s.URL}}); !errors.Is(err, bucket.ErrNoBucket) {
		t.Fatalf("a bucket that does not exist: %v", err)
	}
}

// s3TestBucket is an S3 bucket of its own moto_server behind a counting
// proxy the cluster's pods reach, with a Secret holding its key pair
// (named secret; anonymous requests cannot be presigned), removed at the
// end of the test.
func s3TestBucket(t *testing.T, c k8stest.Cluster, name, secret string) (*storeProxy, *s3.Client, kubernetes.GenericStorageBucketSpec) {
	t.Helper()
	ctx := context.Background()
	m := mototest.Start(t)
	p := newStoreProxy(t, nodeIP(t, c), m.Endpoint)
	s3c := s3.NewFromConfig(m.Config(), func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	cs := client(t, c)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret},
		Data: map[string][]byte{"username": []byte("testing"), "password": []byte("testing")}}
	if _, err := cs.CoreV1().Secrets(c.Namespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.CoreV1().Secrets(c.Namespace).Delete(context.Background(), secret, metav1.DeleteOptions{})
	})
	return p, s3c, kubernetes.GenericStorageBucketSpec{Bucket: name, EndpointURL: p.URL, UsernamePasswordSecret: secret}
}
