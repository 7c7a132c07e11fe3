// Package fakegcs starts fake-gcs-server, an emulator of Google Cloud
// Storage's JSON API, for tests: one server per call on a free port of the
// given address, in memory, stopped by its process id when the test ends.
// scripts/fakegcs.sh builds the pinned program; $MEADOWRUN_FAKE_GCS names
// it. Tests skip without it, and fail instead when
// $MEADOWRUN_REQUIRE_FAKE_GCS is 1.
package fakegcs

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment variables of the tests.
const (
	EnvProgram = "MEADOWRUN_FAKE_GCS"
	EnvRequire = "MEADOWRUN_REQUIRE_FAKE_GCS"
)

// Server is a running fake-gcs-server.
type Server struct {
	// URL is its base URL, http://HOST:PORT.
	URL string
}

// Start starts fake-gcs-server on host (an address of this machine) and
// stops it when t ends.
func Start(t testing.TB, host string) *Server {
	t.Helper()
	prog := os.Getenv(EnvProgram)
	if prog == "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("fakegcs: $%s is not set: build fake-gcs-server with scripts/fakegcs.sh", EnvProgram)
		}
		t.Skipf("fakegcs: skipping: $%s does not name fake-gcs-server (scripts/fakegcs.sh builds it)", EnvProgram)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	var log bytes.Buffer
	cmd := exec.Command(prog, "-backend", "memory", "-scheme", "http", "-host", host, "-port", port,
		"-public-host", addr, "-external-url", "http://"+addr, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("fakegcs: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	s := &Server{URL: "http://" + addr}
	deadline := time.After(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/storage/v1/b")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("fakegcs: fake-gcs-server exited (%v): %s", err, log.String())
		case <-deadline:
			t.Fatalf("fakegcs: fake-gcs-server did not answer within 30s: %s", log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CreateBucket creates bucket name.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	resp, err := http.Post(s.URL+"/storage/v1/b?project=test", "application/json", strings.NewReader(`{"name":`+strconv.Quote(name)+`}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fakegcs: creating bucket %s: %s", name, resp.Status)
	}
}

// String implements fmt.Stringer.
func (s *Server) String() string { return fmt.Sprintf("fake-gcs-server at %s", s.URL) }
