package k8shost

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/bucket"
)

// Storage kinds of StorageSpec.
const (
	StorageS3  = "s3"
	StorageGCS = "gcs"
)

// StorageSpec is the object store pods fetch the program from (the
// reference's storage_spec).
type StorageSpec struct {
	// Kind is StorageS3 (GenericStorageBucketSpec) or StorageGCS
	// (GoogleBucketSpec).
	Kind string
	// Bucket is the bucket's name.
	Bucket string
	// Endpoint is the store's URL as this process reaches it: required
	// for S3; for GCS "" means $STORAGE_EMULATOR_HOST, else Google's.
	Endpoint string
	// EndpointInCluster is its URL as pods reach it; "" means Endpoint.
	EndpointInCluster string
	// Secret names a Secret of the namespace with keys "username" and
	// "password": the S3 key pair. "" means anonymous requests.
	Secret string
	// Region signs S3 requests; "" means us-east-1.
	Region string
	// MinValueBytes is the size from which a task's argument or result
	// travels through the bucket; 0 means DefaultValueBytes, negative
	// never.
	MinValueBytes int64
}

// fetchTTL is how long a pod's download URL is valid: the pod uses it as
// it starts.
const fetchTTL = time.Hour

// openStorage opens the bucket of opts.Storage and checks it.
func (h *Host) openStorage(ctx context.Context) (bucket.Store, error) {
	sp := h.opts.Storage
	var st bucket.Store
	var err error
	switch sp.Kind {
	case StorageS3:
		cfg := bucket.S3Config{Bucket: sp.Bucket, Endpoint: sp.Endpoint, MachineEndpoint: sp.EndpointInCluster, Region: sp.Region}
		if sp.Secret != "" {
			if cfg.AccessKey, cfg.SecretKey, err = h.usernamePassword(ctx, sp.Secret); err != nil {
				return nil, err
			}
		}
		st, err = bucket.NewS3(cfg)
	case StorageGCS:
		if sp.Secret != "" {
			return nil, fmt.Errorf("kubernetes: a Google Cloud Storage bucket takes no secret: the client uses its Google credentials")
		}
		endpoint := sp.Endpoint
		if endpoint == "" {
			endpoint = os.Getenv("STORAGE_EMULATOR_HOST")
		}
		st, err = bucket.NewGCS(ctx, bucket.GCSConfig{Bucket: sp.Bucket, Endpoint: endpoint, MachineEndpoint: sp.EndpointInCluster})
	default:
		return nil, fmt.Errorf("kubernetes: storage kind %q: want %q or %q", sp.Kind, StorageS3, StorageGCS)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: storage: %w", err)
	}
	if err := st.Check(ctx); err != nil {
		return nil, fmt.Errorf("kubernetes: storage: %w", err)
	}
	return st, nil
}

// usernamePassword reads the keys "username" and "password" of Secret
// name in the host's namespace.
func (h *Host) usernamePassword(ctx context.Context, name string) (string, string, error) {
	s, err := h.cs.CoreV1().Secrets(h.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", fmt.Errorf("kubernetes: storage: no Secret %s in namespace %s: create it with the keys username and password of the bucket's store", name, h.ns)
	}
	if err != nil {
		return "", "", fmt.Errorf("kubernetes: storage: reading Secret %s: %w", name, h.classify(err))
	}
	var missing []string
	for _, k := range []string{"username", "password"} {
		if len(s.Data[k]) == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return "", "", fmt.Errorf("kubernetes: storage: Secret %s in namespace %s lacks the key(s) %s", name, h.ns, strings.Join(missing, " and "))
	}
	return string(s.Data["username"]), string(s.Data["password"]), nil
}

// programFetch returns how a pod downloads program bin from the bucket,
// writing it there first unless it is there already (once per process
// and program). ok is false without a bucket or when it failed, which was
// logged: the pod then gets the program through the API server.
func (h *Host) programFetch(ctx context.Context, pod string, bin *agentclient.Program) (bucket.Fetch, bool) {
	if h.store == nil {
		return bucket.Fetch{}, false
	}
	f, err := h.offer(ctx, bin.SHA, bin.Size, bin.Path)
	if err != nil {
		fmt.Fprintf(h.opts.Log, "[meadowrun] pod %s: the program goes through the API server: %v\n", pod, err)
		return bucket.Fetch{}, false
	}
	return f, true
}

// contentStore is the agentclient.ContentStore of a host with a bucket:
// agents in pods download deployment files from it.
type contentStore struct{ h *Host }

// Download implements agentclient.ContentStore.
func (c contentStore) Download(ctx context.Context, sha string, size int64, path string) (agentclient.Download, bool) {
	f, err := c.h.offer(ctx, sha, size, path)
	if err != nil {
		fmt.Fprintf(c.h.opts.Log, "[meadowrun] content %.12s goes through the API server: %v\n", sha, err)
		return agentclient.Download{}, false
	}
	return agentclient.Download{URL: f.URL, Header: f.Header}, true
}

// offer writes the size bytes of the file at path, of sha256 sha, to the
// bucket unless they are there (asked once per process and content), and
// returns how a pod downloads them.
func (h *Host) offer(ctx context.Context, sha string, size int64, path string) (bucket.Fetch, error) {
	key := bucket.ContentKey(sha)
	h.uploadMu.Lock()
	u := h.uploads[key]
	if u == nil {
		u = &upload{}
		h.uploads[key] = u
	}
	h.uploadMu.Unlock()
	u.mu.Lock()
	if !u.done {
		u.err = h.put(ctx, key, size, path)
		u.done = u.err == nil
	}
	err := u.err
	u.mu.Unlock()
	if err != nil {
		return bucket.Fetch{}, err
	}
	return h.store.Fetch(ctx, key, fetchTTL)
}

// upload is the state of one content's upload to the bucket.
type upload struct {
	mu   sync.Mutex
	done bool
	err  error
}

func (h *Host) put(ctx context.Context, key string, size int64, path string) error {
	if ok, err := h.store.Exists(ctx, key); err != nil || ok {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return h.store.Put(ctx, key, f, size)
}

// content is the host's agentclient.ContentStore: nil without a bucket.
func (h *Host) content() agentclient.ContentStore {
	if h.store == nil {
		return nil
	}
	return contentStore{h}
}
