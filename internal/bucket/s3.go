package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// S3Config is a bucket of an S3-compatible store (MinIO, Ceph, versitygw,
// AWS S3), with a key pair (the reference's GenericStorageBucketSpec).
type S3Config struct {
	// Bucket is the bucket's name.
	Bucket string
	// Endpoint is the store's base URL as this process reaches it.
	Endpoint string
	// MachineEndpoint is the base URL the host's machines reach it at;
	// "" means Endpoint.
	MachineEndpoint string
	// Region signs requests; "" means us-east-1.
	Region string
	// AccessKey and SecretKey are the credentials (username, password).
	AccessKey, SecretKey string
	// HTTPClient, when not nil, makes the requests.
	HTTPClient *http.Client
}

// S3 is a Store in an S3-compatible bucket. Requests use path-style
// addresses (endpoint/bucket/key), which every S3-compatible store serves.
type S3 struct {
	cfg     S3Config
	c       *s3.Client
	presign *s3.PresignClient
}

// NewS3 returns the bucket cfg names; it sends no request.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("bucket: an S3-compatible bucket needs a bucket name")
	}
	if cfg.Endpoint == "" {
		return nil, fmt.Errorf("bucket: bucket %s: the store's endpoint URL is needed", cfg.Bucket)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.MachineEndpoint == "" {
		cfg.MachineEndpoint = cfg.Endpoint
	}
	client := func(endpoint string) *s3.Client {
		o := s3.Options{
			Region:       cfg.Region,
			BaseEndpoint: aws.String(endpoint),
			UsePathStyle: true,
			// Checksums only where the API requires them: not every
			// S3-compatible store knows the newer checksum headers.
			RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
			ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		}
		if cfg.AccessKey != "" || cfg.SecretKey != "" {
			o.Credentials = credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")
		} else {
			o.Credentials = aws.AnonymousCredentials{}
		}
		if cfg.HTTPClient != nil {
			o.HTTPClient = cfg.HTTPClient
		}
		return s3.New(o)
	}
	return &S3{cfg: cfg, c: client(cfg.Endpoint), presign: s3.NewPresignClient(client(cfg.MachineEndpoint))}, nil
}

// String implements Store.
func (b *S3) String() string { return fmt.Sprintf("bucket %s at %s", b.cfg.Bucket, b.cfg.Endpoint) }

// Check implements Store.
func (b *S3) Check(ctx context.Context) error {
	_, err := b.c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.cfg.Bucket)})
	if err != nil {
		return b.err("checking the bucket", "", err)
	}
	return nil
}

// Exists implements Store.
func (b *S3) Exists(ctx context.Context, key string) (bool, error) {
	_, err := b.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)})
	if err == nil {
		return true, nil
	}
	if err = b.err("looking up", key, err); errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return false, err
}

// Put implements Store.
func (b *S3) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	_, err := b.c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key), Body: r, ContentLength: aws.Int64(size)})
	if err != nil {
		return b.err("writing", key, err)
	}
	return nil
}

// Get implements Store.
func (b *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := b.c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		return nil, b.err("reading", key, err)
	}
	return out.Body, nil
}

// Delete implements Store.
func (b *S3) Delete(ctx context.Context, key string) error {
	_, err := b.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		if err = b.err("deleting", key, err); !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// Fetch implements Store: a presigned GET on the machines' endpoint.
func (b *S3) Fetch(ctx context.Context, key string, ttl time.Duration) (Fetch, error) {
	req, err := b.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)}, s3.WithPresignExpires(ttl))
	if err != nil {
		return Fetch{}, b.err("presigning", key, err)
	}
	return Fetch{URL: req.URL}, nil
}

// Upload implements Store: a presigned PUT on the machines' endpoint.
func (b *S3) Upload(ctx context.Context, key string, ttl time.Duration) (Upload, error) {
	req, err := b.presign.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)}, s3.WithPresignExpires(ttl))
	if err != nil {
		return Upload{}, b.err("presigning", key, err)
	}
	return Upload{Method: req.Method, URL: req.URL}, nil
}

// err classifies an S3 error of doing what on key ("" for the bucket).
func (b *S3) err(what, key string, err error) error {
	obj := b.String()
	if key != "" {
		obj = fmt.Sprintf("%s in %s", key, b)
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case code == "NoSuchBucket" || (key == "" && status == http.StatusNotFound):
		return fmt.Errorf("bucket: %s %s: %w: create it, or name another bucket (%w)", what, obj, ErrNoBucket, err)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("bucket: %s %s: %w", what, obj, ErrNotFound)
	case code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || status == http.StatusForbidden || status == http.StatusUnauthorized:
		return fmt.Errorf("bucket: %s %s: %w: check the username and password (the access key pair) and that they may read and write the bucket (%w)", what, obj, ErrDenied, err)
	}
	return fmt.Errorf("bucket: %s %s: %w", what, obj, err)
}
