// Package bucket keeps content-addressed objects in an object store, an
// S3-compatible one ([NewS3]) or Google Cloud Storage ([NewGCS]), for hosts
// whose machines fetch what they run from the store rather than through
// the client: a Kubernetes pod downloads the program from a URL the client
// gives it (a presigned URL, or a URL and an authorization header), so that
// many pods starting at once do not each pull it through the API server.
//
// Keys are chosen by the caller; [ContentKey] is the key of content (a
// program, a file of a deployment) by its sha256. An object once written
// under a content key is never written again (Exists is asked first).
package bucket

import (
	"context"
	"errors"
	"io"
	"time"
)

// Store is a bucket of an object store.
type Store interface {
	// String names the bucket and its endpoint, for messages.
	String() string
	// Check returns an error, classified and saying what to fix, unless
	// the bucket exists and the credentials may read it.
	Check(ctx context.Context) error
	// Exists says whether key is in the bucket.
	Exists(ctx context.Context, key string) (bool, error)
	// Put writes size bytes of r under key.
	Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error
	// Get reads key; a missing key is an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Fetch returns how a machine of the host downloads key within ttl.
	Fetch(ctx context.Context, key string, ttl time.Duration) (Fetch, error)
	// Upload returns how a machine of the host writes key within ttl.
	Upload(ctx context.Context, key string, ttl time.Duration) (Upload, error)
}

// Upload is how a machine writes an object with a plain HTTP client: a
// request of Method (PUT, POST) to URL whose body is the object, with
// Header, when not "", as one more request header.
type Upload struct {
	Method, URL, Header string
}

// Fetch is how a machine downloads an object with a plain HTTP client
// (curl, wget): a GET of URL with Header, when not "", as one more
// request header ("Name: value").
type Fetch struct {
	URL    string
	Header string
}

// Errors the stores' errors wrap.
var (
	// ErrNotFound: no such object.
	ErrNotFound = errors.New("no such object")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("the bucket does not exist")
	// ErrDenied: the credentials were refused or may not do this.
	ErrDenied = errors.New("access denied")
)

// ContentKey is the key of content whose sha256 is sha (hex).
func ContentKey(sha string) string { return "meadowrun/content/" + sha }
