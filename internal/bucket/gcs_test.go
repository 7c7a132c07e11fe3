package bucket_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meadowrun-go/meadowrun/internal/bucket"
	"github.com/meadowrun-go/meadowrun/internal/fakegcs"
)

// The Google Cloud Storage store against fake-gcs-server, which
// implements the JSON API without credentials.
func TestGCS(t *testing.T) {
	ctx := context.Background()
	s := fakegcs.Start(t, "127.0.0.1")
	for _, endpoint := range []string{s.URL, strings.TrimPrefix(s.URL, "http://")} {
		if _, err := bucket.NewGCS(ctx, bucket.GCSConfig{Bucket: "b", Endpoint: endpoint}); err != nil {
			t.Fatalf("endpoint %s: %v", endpoint, err)
		}
	}
	b, err := bucket.NewGCS(ctx, bucket.GCSConfig{Bucket: "progs", Endpoint: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	checkStore(t, b, func() { s.CreateBucket(t, "progs") })
}

// Without an emulator, the client's Google credentials are needed; a
// machine without any gets an error saying how to provide them.
func TestGCSNoCredentials(t *testing.T) {
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", t.TempDir()+"/none.json")
	_, err := bucket.NewGCS(context.Background(), bucket.GCSConfig{Bucket: "b"})
	if err == nil || !strings.Contains(err.Error(), "application-default login") {
		t.Fatalf("err = %v", err)
	}
}

// With credentials, a machine's download carries the client's token.
func TestGCSFetchCarriesTheToken(t *testing.T) {
	b, err := bucket.NewGCS(context.Background(), bucket.GCSConfig{Bucket: "b", Endpoint: "127.0.0.1:1", MachineEndpoint: "http://store.cluster:4443",
		Tokens: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "tok", TokenType: "Bearer"})})
	if err != nil {
		t.Fatal(err)
	}
	f, err := b.Fetch(context.Background(), "meadowrun/programs/abc", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if f.URL != "http://store.cluster:4443/storage/v1/b/b/o/meadowrun%2Fprograms%2Fabc?alt=media" || f.Header != "Authorization: Bearer tok" {
		t.Fatalf("Fetch = %+v", f)
	}
	u, err := b.Upload(context.Background(), "meadowrun/results/r/w-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if u.Method != "POST" || u.URL != "http://store.cluster:4443/upload/storage/v1/b/b/o?uploadType=media&name=meadowrun%2Fresults%2Fr%2Fw-1" || u.Header != "Authorization: Bearer tok" {
		t.Fatalf("Upload = %+v", u)
	}
}
