// Package mototest starts moto_server, the AWS emulator, for tests: one
// server on a loopback port per call, stopped by its process id when the
// test ends, and AWS SDK configurations that reach only it.
//
// Tests skip when moto cannot be run (no python3 that imports it, no
// moto_server program), and fail instead when $MEADOWRUN_REQUIRE_MOTO is
// 1.
package mototest

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// EnvRequire names the variable that, set to 1, turns a missing moto into
// a test failure.
const EnvRequire = "MEADOWRUN_REQUIRE_MOTO"

// Region is the region the configurations name.
const Region = "us-east-1"

// Server is a running moto_server.
type Server struct {
	// Endpoint is its base URL, http://127.0.0.1:PORT.
	Endpoint string
	cmd      *exec.Cmd
	exited   chan error // receives Wait's result once
}

// Start starts moto_server on a free port between 15000 and 15999 and
// stops it when t ends. It skips t (or fails it, see [EnvRequire]) when
// moto is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	argv, err := command()
	if err != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("mototest: moto is required ($%s=1) but cannot be run: %v", EnvRequire, err)
		}
		t.Skipf("mototest: skipping: %v; install moto, or set $%s=1 to make this a failure", err, EnvRequire)
	}
	var lastErr error
	for range 5 {
		port := freePort()
		if port == 0 {
			continue
		}
		s, err := start(argv, port)
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("mototest: starting moto_server: %v", lastErr)
	return nil
}

// freePort returns a port in 15000-15999 that nothing listens on now,
// or 0.
func freePort() int {
	for range 20 {
		port := 15000 + rand.IntN(1000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			return port
		}
	}
	return 0
}

// command returns the command line that starts moto_server, without its
// address: python3 -m moto.server where python3 imports moto, else a
// moto_server program on $PATH.
func command() ([]string, error) {
	python, err := exec.LookPath("python3")
	if err == nil {
		if err = exec.Command(python, "-c", "import moto.server").Run(); err == nil {
			return []string{python, "-m", "moto.server"}, nil
		}
		err = fmt.Errorf("%s cannot import moto.server (%v)", python, err)
	}
	if script, serr := exec.LookPath("moto_server"); serr == nil {
		return []string{script}, nil
	}
	return nil, fmt.Errorf("no python3 that imports moto and no moto_server on $PATH: %v", err)
}

func start(argv []string, port int) (*Server, error) {
	var log bytes.Buffer
	cmd := exec.Command(argv[0], append(argv[1:], "-H", "127.0.0.1", "-p", strconv.Itoa(port))...)
	cmd.Stdout, cmd.Stderr = &log, &log
	// Instance type validation makes RunInstances refuse unknown types,
	// as AWS does.
	cmd.Env = append(os.Environ(), "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=1")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %v: %w", argv, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s := &Server{Endpoint: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd, exited: exited}
	deadline := time.After(60 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("moto_server on port %d exited (%v): %s", port, err, log.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("moto_server on port %d did not answer within 60s: %s", port, log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the server by its process id: SIGTERM, then SIGKILL after
// five seconds.
func (s *Server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Config returns an AWS configuration that sends every request to s with
// dummy credentials: nothing in it can reach AWS.
func (s *Server) Config() aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint: aws.String(s.Endpoint),
	}
}

// Reset wipes the server's state.
func (s *Server) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Endpoint+"/moto-api/reset", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("mototest: reset: %w", err)
	}
	resp.Body.Close()
	return nil
}

// Atomic returns an AWS configuration that reaches s through a loopback
// proxy that forwards one request at a time, stopped when t ends.
//
// moto_server serves requests on several threads and does not lock an
// item between checking a DynamoDB condition and writing it, so two
// conditional updates that race can both pass, which DynamoDB never
// allows (each write, condition included, is atomic on its item). One
// request at a time gives each write that atomicity (and more): use it
// for tests of concurrent conditional writes.
func (s *Server) Atomic(t testing.TB) aws.Config {
	t.Helper()
	target, err := url.Parse(s.Endpoint)
	if err != nil {
		t.Fatalf("mototest: %v", err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	cfg := s.Config()
	cfg.BaseEndpoint = aws.String(p.URL)
	return cfg
}

// EnforceIAM makes s authenticate and authorize every request after the
// next n (moto's "IAM-like access control", the server-mode form of its
// INITIAL_NO_AUTH_ACTION_COUNT setting): from then on a request must be
// signed with the access key of an IAM user (or of a role assumed through
// STS) that moto holds, and that user's identity policies must allow the
// action. moto matches a policy's Action and Effect, not its Resource
// (except for S3 and a few services, it authorizes every request against
// the resource "*") nor resource policies. The setting lasts until the
// server stops: a test that calls it should own its server.
func (s *Server) EnforceIAM(ctx context.Context, n int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Endpoint+"/moto-api/reset-auth", strings.NewReader(strconv.Itoa(n)))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("mototest: reset-auth: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mototest: reset-auth: %s", resp.Status)
	}
	return nil
}

// AWSErrors returns the endpoint of a loopback proxy in front of s,
// stopped when t ends, that sends moto's errors to JSON-protocol
// services (those called with an X-Amz-Target header, such as Secrets
// Manager and DynamoDB) as AWS does: moto answers the errors of its
// access control (AccessDenied, InvalidClientTokenId, ...) to those
// services in XML, which their SDK clients cannot read, while AWS sends
// the JSON document {"__type": CODE, "message": TEXT}. The proxy
// rewrites such a response into that document, with the same code and
// text; everything else passes unchanged.
func (s *Server) AWSErrors(t testing.TB) string {
	t.Helper()
	target, err := url.Parse(s.Endpoint)
	if err != nil {
		t.Fatalf("mototest: %v", err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.StatusCode < 400 || resp.Request.Header.Get("X-Amz-Target") == "" || strings.Contains(resp.Header.Get("Content-Type"), "json") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var x struct {
			Code    string `xml:"Errors>Error>Code"`
			Message string `xml:"Errors>Error>Message"`
		}
		if xml.Unmarshal(body, &x) != nil || x.Code == "" {
			resp.Body = io.NopCloser(bytes.NewReader(body))
			return nil
		}
		j, _ := json.Marshal(map[string]string{"__type": x.Code, "message": x.Message})
		resp.Header.Set("Content-Type", "application/x-amz-json-1.1")
		resp.Header.Set("X-Amzn-ErrorType", x.Code)
		resp.Header.Set("Content-Length", strconv.Itoa(len(j)))
		resp.ContentLength = int64(len(j))
		resp.Body = io.NopCloser(bytes.NewReader(j))
		return nil
	}
	p := httptest.NewServer(proxy)
	t.Cleanup(p.Close)
	return p.URL
}
