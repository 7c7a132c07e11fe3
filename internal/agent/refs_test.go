package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// The agent's downloads of arguments and uploads of results: checked by
// size and sha256, and errors name the store's host, never the URL's
// query (a signature) or the header (a token).
func TestRefDownloadsAndUploads(t *testing.T) {
	content := []byte(strings.Repeat("argument ", 10_000))
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	var put []byte
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		switch r.URL.Path {
		case "/arg":
			w.Write(content)
		case "/short":
			w.Write(content[:100])
		case "/result":
			put, _ = io.ReadAll(r.Body)
		default:
			http.Error(w, "denied", http.StatusForbidden)
		}
	}))
	defer srv.Close()
	const secret = "X-Amz-Signature=s3cr3t"
	got, err := fetchRef(agentproto.Ref{SHA: sha, Size: int64(len(content)), URL: srv.URL + "/arg?" + secret, Header: "Authorization: Bearer tok"})
	if err != nil || string(got) != string(content) || auth != "Bearer tok" {
		t.Fatalf("fetchRef: %d bytes, %v, Authorization %q", len(got), err, auth)
	}
	if err := putTarget(agentproto.Target{Method: http.MethodPut, URL: srv.URL + "/result?" + secret}, content); err != nil || string(put) != string(content) {
		t.Fatalf("putTarget: %v, the store got %d bytes", err, len(put))
	}
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"refused download", func() error {
			_, err := fetchRef(agentproto.Ref{SHA: sha, Size: int64(len(content)), URL: srv.URL + "/no?" + secret, Header: "Authorization: Bearer tok"})
			return err
		}, "403"},
		{"wrong content", func() error {
			_, err := fetchRef(agentproto.Ref{SHA: strings.Repeat("0", 64), Size: int64(len(content)), URL: srv.URL + "/arg?" + secret})
			return err
		}, "sha256"},
		{"short content", func() error {
			_, err := fetchRef(agentproto.Ref{SHA: sha, Size: int64(len(content)), URL: srv.URL + "/short?" + secret})
			return err
		}, "want"},
		{"refused upload", func() error {
			return putTarget(agentproto.Target{Method: http.MethodPut, URL: srv.URL + "/no?" + secret, Header: "Authorization: Bearer tok"}, content)
		}, "403"},
		{"unreachable store", func() error {
			return putTarget(agentproto.Target{Method: http.MethodPut, URL: "http://127.0.0.1:1/r?" + secret}, content)
		}, "127.0.0.1:1"},
	} {
		err := tc.err()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "tok") {
			t.Errorf("%s: %v, want an error mentioning %q and neither the signature nor the token", tc.name, err, tc.want)
		}
	}
}
