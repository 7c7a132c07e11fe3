package bucket_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
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
	if err := b.Check(ctx); !errors.Is(err, bucket.ErrNoBucket) || !strings.Contains(err.Error(), "progs") {
		t.Fatalf("missing bucket: %v, want ErrNoBucket naming it", err)
	}
	s.CreateBucket(t, "progs")
	if err := b.Check(ctx); err != nil {
		t.Fatal(err)
	}
	key := bucket.ContentKey("abc")
	if ok, err := b.Exists(ctx, key); ok || err != nil {
		t.Fatalf("Exists before Put = %v, %v", ok, err)
	}
	if _, err := b.Get(ctx, key); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
	}
	data := bytes.Repeat([]byte("meadowrun "), 100_000)
	if err := b.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Exists(ctx, key); !ok || err != nil {
		t.Fatalf("Exists after Put = %v, %v", ok, err)
	}
	r, err := b.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v; want the %d put", len(got), err, len(data))
	}
	f, err := b.Fetch(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) || f.Header != "" {
		t.Fatalf("GET %s: %s, %d bytes, header %q", f.URL, resp.Status, len(got), f.Header)
	}
	if err := b.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, key); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	if ok, err := b.Exists(ctx, key); ok || err != nil {
		t.Fatalf("Exists after Delete = %v, %v", ok, err)
	}
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
}
