package bucket_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/meadowrun-go/meadowrun/internal/bucket"
	"github.com/meadowrun-go/meadowrun/internal/mototest"
)

// The S3 store against moto_server's S3, a real S3 implementation (it
// does not check signatures, so refused credentials are not tested here).
func TestS3(t *testing.T) {
	m := mototest.Start(t)
	b, err := bucket.NewS3(bucket.S3Config{Bucket: "progs", Endpoint: m.Endpoint, AccessKey: "u", SecretKey: "p"})
	if err != nil {
		t.Fatal(err)
	}
	c := s3.NewFromConfig(m.Config(), func(o *s3.Options) { o.UsePathStyle = true })
	checkStore(t, b, func() {
		if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("progs")}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestNewS3BadConfig(t *testing.T) {
	if _, err := bucket.NewS3(bucket.S3Config{Endpoint: "http://x"}); err == nil || !strings.Contains(err.Error(), "bucket name") {
		t.Fatalf("no bucket: %v", err)
	}
	if _, err := bucket.NewS3(bucket.S3Config{Bucket: "b"}); err == nil || !strings.Contains(err.Error(), "endpoint") {
		t.Fatalf("no endpoint: %v", err)
	}
}
