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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/meadowrun-go/meadowrun/internal/bucket"
	"github.com/meadowrun-go/meadowrun/internal/mototest"
)

// The S3 store against moto_server's S3, a real S3 implementation (it
// does not check signatures, so refused credentials are not tested here).
func TestS3(t *testing.T) {
	ctx := context.Background()
	m := mototest.Start(t)
	b, err := bucket.NewS3(bucket.S3Config{Bucket: "progs", Endpoint: m.Endpoint, AccessKey: "u", SecretKey: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx); !errors.Is(err, bucket.ErrNoBucket) || !strings.Contains(err.Error(), "progs") {
		t.Fatalf("missing bucket: %v, want ErrNoBucket naming it", err)
	}
	cfg := m.Config()
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("progs")}); err != nil {
		t.Fatal(err)
	}
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
	// What a machine does: a plain GET of the presigned URL.
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
		t.Fatalf("GET %s: %s, %d bytes", f.URL, resp.Status, len(got))
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

func TestNewS3BadConfig(t *testing.T) {
	if _, err := bucket.NewS3(bucket.S3Config{Endpoint: "http://x"}); err == nil || !strings.Contains(err.Error(), "bucket name") {
		t.Fatalf("no bucket: %v", err)
	}
	if _, err := bucket.NewS3(bucket.S3Config{Bucket: "b"}); err == nil || !strings.Contains(err.Error(), "endpoint") {
		t.Fatalf("no endpoint: %v", err)
	}
}
