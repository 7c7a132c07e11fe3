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

	"github.com/meadowrun-go/meadowrun/internal/bucket"
)

// checkStore runs b through what its users do, b's bucket "progs" being
// missing until create makes it: Check, Exists, Get, Put, Fetch (a plain
// GET of its URL, as a machine does) and Delete.
func checkStore(t *testing.T, b bucket.Store, create func()) {
	t.Helper()
	ctx := context.Background()
	if err := b.Check(ctx); !errors.Is(err, bucket.ErrNoBucket) || !strings.Contains(err.Error(), "progs") {
		t.Fatalf("missing bucket: %v, want ErrNoBucket naming it", err)
	}
	create()
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
	// A machine's upload (a plain request to its URL) writes an object
	// the client then reads.
	up, err := b.Upload(ctx, "meadowrun/results/r/w-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	upData := bytes.Repeat([]byte("result "), 50_000)
	req, err := http.NewRequest(up.Method, up.URL, bytes.NewReader(upData))
	if err != nil {
		t.Fatal(err)
	}
	if up.Header != "" {
		t.Fatalf("upload header %q without credentials", up.Header)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s", up.Method, up.URL, resp.Status)
	}
	r, err = b.Get(ctx, "meadowrun/results/r/w-1")
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, upData) {
		t.Fatalf("Get of the uploaded object: %d bytes, %v; want %d", len(got), err, len(upData))
	}
	if err := b.Delete(ctx, "meadowrun/results/r/w-1"); err != nil {
		t.Fatal(err)
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
