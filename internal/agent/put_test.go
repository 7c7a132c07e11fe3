package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// A Put with a URL downloads its content (from an object store, in
// production) and checks it as bytes sent over the connection.
func TestPutDownloadsFromAURL(t *testing.T) {
	content := []byte(strings.Repeat("content ", 1000))
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		switch r.URL.Path {
		case "/ok":
			w.Write(content)
		case "/other":
			w.Write([]byte(strings.Repeat("x", len(content))))
		default:
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	defer srv.Close()
	a := &agent{dir: t.TempDir()}
	req := &agentproto.Put{SHA: sha, Size: int64(len(content)), Mode: 0o600, URL: srv.URL + "/ok?X-Signature=secret", Header: "Authorization: Bearer tok"}
	if err := a.put(strings.NewReader(""), req); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(a.path(agentproto.FileDir, sha)); err != nil || string(got) != string(content) {
		t.Fatalf("stored %d bytes, %v", len(got), err)
	}
	if auth != "Bearer tok" {
		t.Fatalf("the request's Authorization header was %q", auth)
	}
	for path, want := range map[string]string{"/other": "expected", "/denied": "403"} {
		req := *req
		req.URL = srv.URL + path + "?X-Signature=secret"
		err := a.put(strings.NewReader(""), &req)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret") {
			t.Fatalf("%s: err = %v, want one mentioning %q and not the URL's signature", path, err, want)
		}
	}
}
