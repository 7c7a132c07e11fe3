package agentclient

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A program's hash is remembered by the file's identity, and a program
// rewritten (another size, time or inode) is hashed again.
func TestHashFileCached(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	p := filepath.Join(t.TempDir(), "prog")
	want := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	if err := os.WriteFile(p, []byte("one"), 0o700); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		sha, n, err := hashFileCached(p)
		if err != nil || sha != want([]byte("one")) || n != 3 {
			t.Fatalf("hash %s, %d, %v; want %s, 3", sha, n, err, want([]byte("one")))
		}
	}
	if f := shaCacheFile(fileKey(p)); f == "" {
		t.Fatal("no cache file name")
	} else if _, err := os.Stat(f); err != nil {
		t.Fatalf("the hash is not kept on disk: %v", err)
	}
	// Another process: only the disk.
	shaMemo.Clear()
	if sha, _, err := hashFileCached(p); err != nil || sha != want([]byte("one")) {
		t.Fatalf("from the disk cache: %s, %v", sha, err)
	}
	// Rewritten in place with content of the same size, at another time.
	if err := os.WriteFile(p, []byte("two"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	if sha, _, err := hashFileCached(p); err != nil || sha != want([]byte("two")) {
		t.Fatalf("after a rewrite: %s, %v; want %s", sha, err, want([]byte("two")))
	}
	// Replaced by another file (rename over it).
	q := p + ".new"
	os.WriteFile(q, []byte("three"), 0o700)
	if err := os.Rename(q, p); err != nil {
		t.Fatal(err)
	}
	if sha, _, err := hashFileCached(p); err != nil || sha != want([]byte("three")) {
		t.Fatalf("after a replacement: %s, %v", sha, err)
	}
}
