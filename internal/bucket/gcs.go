package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// GCSConfig is a bucket of Google Cloud Storage (the reference's
// GoogleBucketSpec), reached through its JSON API.
type GCSConfig struct {
	// Bucket is the bucket's name.
	Bucket string
	// Endpoint is an emulator's base URL or host:port (what
	// $STORAGE_EMULATOR_HOST holds): requests go there without
	// credentials. "" means Google's, with the application default
	// credentials (gcloud auth application-default login, a service
	// account key in $GOOGLE_APPLICATION_CREDENTIALS, or the metadata
	// server).
	Endpoint string
	// MachineEndpoint is the base URL the host's machines reach the
	// store at; "" means Endpoint.
	MachineEndpoint string
	// Tokens, when not nil, gives the OAuth2 tokens of requests to
	// Google's endpoint.
	Tokens oauth2.TokenSource
	// HTTPClient, when not nil, makes the requests.
	HTTPClient *http.Client
}

// GCS is a Store in a Google Cloud Storage bucket.
type GCS struct {
	cfg    GCSConfig
	base   string // JSON API base URL
	mbase  string // machines' base URL
	tokens oauth2.TokenSource
	hc     *http.Client
}

const googleStorage = "https://storage.googleapis.com"

// NewGCS returns the bucket cfg names. Without an emulator endpoint it
// finds the application default credentials, and fails when there are
// none; it sends no request to the store.
func NewGCS(ctx context.Context, cfg GCSConfig) (*GCS, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("bucket: a Google Cloud Storage bucket needs a bucket name")
	}
	g := &GCS{cfg: cfg, base: googleStorage, tokens: cfg.Tokens, hc: cfg.HTTPClient}
	if g.hc == nil {
		g.hc = http.DefaultClient
	}
	if cfg.Endpoint != "" {
		g.base = baseURL(cfg.Endpoint)
	} else if g.tokens == nil {
		ts, err := google.DefaultTokenSource(ctx, "https://www.googleapis.com/auth/devstorage.read_write")
		if err != nil {
			return nil, fmt.Errorf("bucket: Google Cloud Storage bucket %s: no Google credentials (run gcloud auth application-default login, or set GOOGLE_APPLICATION_CREDENTIALS): %w", cfg.Bucket, err)
		}
		g.tokens = ts
	}
	g.mbase = g.base
	if cfg.MachineEndpoint != "" {
		g.mbase = baseURL(cfg.MachineEndpoint)
	}
	return g, nil
}

// baseURL makes host:port an http URL, as the client libraries read
// $STORAGE_EMULATOR_HOST.
func baseURL(e string) string {
	e = strings.TrimRight(e, "/")
	if !strings.Contains(e, "://") {
		e = "http://" + e
	}
	return e
}

// String implements Store.
func (g *GCS) String() string { return fmt.Sprintf("bucket gs://%s at %s", g.cfg.Bucket, g.base) }

func (g *GCS) objectPath(key string) string {
	return "/storage/v1/b/" + url.PathEscape(g.cfg.Bucket) + "/o/" + url.PathEscape(key)
}

// do sends a request to the JSON API and returns the response of a 2xx
// status; others are errors, classified.
func (g *GCS) do(ctx context.Context, what, key, method, u string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	if g.tokens != nil {
		tok, err := g.tokens.Token()
		if err != nil {
			return nil, fmt.Errorf("bucket: %s: getting a Google token: %w", g, err)
		}
		tok.SetAuthHeader(req)
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bucket: %s %s: %w", what, g.obj(key), err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	resp.Body.Close()
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(msg, &e) == nil && e.Error.Message != "" {
		msg = []byte(e.Error.Message)
	}
	detail := fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	switch {
	case resp.StatusCode == http.StatusNotFound && key == "":
		return nil, fmt.Errorf("bucket: %s %s: %w: create it, or name another bucket (%s)", what, g.obj(key), ErrNoBucket, detail)
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("bucket: %s %s: %w", what, g.obj(key), ErrNotFound)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("bucket: %s %s: %w: the Google credentials may not use the bucket (%s)", what, g.obj(key), ErrDenied, detail)
	}
	return nil, fmt.Errorf("bucket: %s %s: %s", what, g.obj(key), detail)
}

func (g *GCS) obj(key string) string {
	if key == "" {
		return g.String()
	}
	return key + " in " + g.String()
}

// Check implements Store.
func (g *GCS) Check(ctx context.Context) error {
	resp, err := g.do(ctx, "checking", "", http.MethodGet, g.base+"/storage/v1/b/"+url.PathEscape(g.cfg.Bucket), nil, 0)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Exists implements Store.
func (g *GCS) Exists(ctx context.Context, key string) (bool, error) {
	resp, err := g.do(ctx, "looking up", key, http.MethodGet, g.base+g.objectPath(key), nil, 0)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return true, nil
}

// Put implements Store.
func (g *GCS) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	u := g.base + "/upload/storage/v1/b/" + url.PathEscape(g.cfg.Bucket) + "/o?uploadType=media&name=" + url.QueryEscape(key)
	resp, err := g.do(ctx, "writing", key, http.MethodPost, u, io.NopCloser(r), size)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Get implements Store.
func (g *GCS) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	resp, err := g.do(ctx, "reading", key, http.MethodGet, g.base+g.objectPath(key)+"?alt=media", nil, 0)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Delete implements Store.
func (g *GCS) Delete(ctx context.Context, key string) error {
	resp, err := g.do(ctx, "deleting", key, http.MethodDelete, g.base+g.objectPath(key), nil, 0)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Fetch implements Store: the object's media URL with this client's
// token as the authorization header (valid about an hour, whatever ttl);
// none for an emulator.
func (g *GCS) Fetch(ctx context.Context, key string, ttl time.Duration) (Fetch, error) {
	f := Fetch{URL: g.mbase + g.objectPath(key) + "?alt=media"}
	if g.tokens != nil {
		tok, err := g.tokens.Token()
		if err != nil {
			return Fetch{}, fmt.Errorf("bucket: %s: getting a Google token: %w", g, err)
		}
		f.Header = "Authorization: " + tok.Type() + " " + tok.AccessToken
	}
	return f, nil
}

// Upload implements Store: a media upload to the machines' endpoint with
// this client's token as the authorization header (valid about an hour,
// whatever ttl); none for an emulator.
func (g *GCS) Upload(ctx context.Context, key string, ttl time.Duration) (Upload, error) {
	u := Upload{Method: http.MethodPost, URL: g.mbase + "/upload/storage/v1/b/" + url.PathEscape(g.cfg.Bucket) + "/o?uploadType=media&name=" + url.QueryEscape(key)}
	if g.tokens != nil {
		tok, err := g.tokens.Token()
		if err != nil {
			return Upload{}, fmt.Errorf("bucket: %s: getting a Google token: %w", g, err)
		}
		u.Header = "Authorization: " + tok.Type() + " " + tok.AccessToken
	}
	return u, nil
}
