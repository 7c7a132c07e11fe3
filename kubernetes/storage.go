package kubernetes

import (
	"fmt"
	"net/url"

	"github.com/meadowrun-go/meadowrun/internal/k8shost"
)

// StorageBucketSpec is an object store that pods fetch the program from
// (the reference's storage_spec): the client writes it to the bucket once
// per content, and each new pod downloads it with curl or wget, so that
// many pods starting at once do not each pull it through the API server.
// A pod whose image has neither (or that fails to download it) gets it
// through the API server, as without a bucket, and the host's log says
// why. The deployment's files, and task arguments and results of at
// least Options.LargeValueBytes, travel through the bucket too (the
// pod's agent downloads and uploads them). It is GenericStorageBucketSpec
// or GoogleBucketSpec.
type StorageBucketSpec interface {
	spec() *k8shost.StorageSpec
}

// GenericStorageBucketSpec is a bucket of an S3-compatible object store
// (MinIO, Ceph, versitygw, AWS S3) with username/password (access key)
// authentication. Requests are path-style; pods download through
// presigned URLs, so they need no credentials.
type GenericStorageBucketSpec struct {
	// Bucket is the bucket's name; it must exist.
	Bucket string
	// EndpointURL is the store's URL as this process reaches it.
	EndpointURL string
	// EndpointURLInCluster is its URL as pods reach it; "" means
	// EndpointURL.
	EndpointURLInCluster string
	// UsernamePasswordSecret names a Secret of the namespace with the
	// keys "username" and "password" (the access key id and secret); ""
	// means anonymous requests.
	UsernamePasswordSecret string
	// Region signs requests; "" means us-east-1.
	Region string
}

func (s GenericStorageBucketSpec) spec() *k8shost.StorageSpec {
	return &k8shost.StorageSpec{Kind: k8shost.StorageS3, Bucket: s.Bucket, Endpoint: s.EndpointURL,
		EndpointInCluster: s.EndpointURLInCluster, Secret: s.UsernamePasswordSecret, Region: s.Region}
}

// GoogleBucketSpec is a bucket of Google Cloud Storage. The client uses
// its application default credentials (gcloud auth application-default
// login, $GOOGLE_APPLICATION_CREDENTIALS, or the metadata server) and
// gives each new pod a download URL with its current access token (valid
// about an hour), so pods need no Google credentials of their own.
type GoogleBucketSpec struct {
	// Bucket is the bucket's name; it must exist.
	Bucket string
	// EmulatorEndpoint is an emulator's URL or host:port (fake-gcs-server,
	// what $STORAGE_EMULATOR_HOST holds): requests go there without
	// credentials. "" means $STORAGE_EMULATOR_HOST, else Google's.
	EmulatorEndpoint string
	// EndpointInCluster is the emulator's URL as pods reach it; "" means
	// EmulatorEndpoint.
	EndpointInCluster string
}

func (s GoogleBucketSpec) spec() *k8shost.StorageSpec {
	return &k8shost.StorageSpec{Kind: k8shost.StorageGCS, Bucket: s.Bucket, Endpoint: s.EmulatorEndpoint, EndpointInCluster: s.EndpointInCluster}
}

// storageParams are the URL parameters of a storage spec.
var storageParams = []string{"storage", "bucket", "endpoint", "endpoint_in_cluster", "secret", "region", "large_value_bytes"}

// storageQuery adds s to a host URL's query.
func storageQuery(q url.Values, s StorageBucketSpec) {
	if s == nil {
		return
	}
	sp := s.spec()
	q.Set("storage", sp.Kind)
	for k, v := range map[string]string{"bucket": sp.Bucket, "endpoint": sp.Endpoint, "endpoint_in_cluster": sp.EndpointInCluster, "secret": sp.Secret, "region": sp.Region} {
		if v != "" {
			q.Set(k, v)
		}
	}
}

// storageFromQuery reads storage=s3|gcs&bucket=...&endpoint=...&
// endpoint_in_cluster=...&secret=...&region=...
func storageFromQuery(q url.Values) (StorageBucketSpec, error) {
	kind := q.Get("storage")
	if kind == "" {
		for _, k := range storageParams[1:] {
			if q.Has(k) {
				return nil, fmt.Errorf("%s= needs storage=s3 or storage=gcs", k)
			}
		}
		return nil, nil
	}
	if q.Get("bucket") == "" {
		return nil, fmt.Errorf("storage=%s needs bucket=NAME", kind)
	}
	switch kind {
	case k8shost.StorageS3:
		return GenericStorageBucketSpec{Bucket: q.Get("bucket"), EndpointURL: q.Get("endpoint"), EndpointURLInCluster: q.Get("endpoint_in_cluster"),
			UsernamePasswordSecret: q.Get("secret"), Region: q.Get("region")}, nil
	case k8shost.StorageGCS:
		if q.Has("secret") || q.Has("region") {
			return nil, fmt.Errorf("storage=gcs takes no secret= or region= (the client's Google credentials are used)")
		}
		return GoogleBucketSpec{Bucket: q.Get("bucket"), EmulatorEndpoint: q.Get("endpoint"), EndpointInCluster: q.Get("endpoint_in_cluster")}, nil
	}
	return nil, fmt.Errorf("storage=%q: want s3 or gcs", kind)
}
