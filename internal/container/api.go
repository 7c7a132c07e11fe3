package container

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The engine is driven through its HTTP API (docs.docker.com/engine/api),
// which is versioned and stable, by the small client below rather than the
// Docker SDK: the SDK's packages (and their dependencies' initialisation)
// would be linked into, and started by, every program and every worker
// process that uses the local host, container deployments or not. The
// tests' helpers use the official client, so the two are checked against
// each other on a real engine.

// maxAPIVersion is the newest API version this client speaks; an older
// engine's own version is used (every call here exists since 1.40).
const maxAPIVersion = "1.45"

// minAPIVersion is the oldest API version with everything used here
// (device requests for GPUs).
const minAPIVersion = "1.40"

// defaultSocket is the engine's default address on Linux.
const defaultSocket = "unix:///var/run/docker.sock"

// apiClient calls one engine's API.
type apiClient struct {
	host    string // as given: unix:///..., tcp://...
	base    string // scheme://authority for requests, without the version
	version string // the API version in paths, once negotiated
	hc      *http.Client
}

// apiError is an engine's answer other than success: its HTTP status and
// the message it gave.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return "Error response from daemon: " + e.msg }

// isNotFound reports whether err is the engine's "no such ..." answer.
func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == http.StatusNotFound
}

// isConflict reports whether err is the engine's answer that the object
// is not in a state for the call (a container not running, say).
func isConflict(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == http.StatusConflict
}

// newAPIClient builds a client for host, or for DOCKER_HOST (and
// DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_API_VERSION, as the docker
// command reads them) when host is "".
func newAPIClient(host string) (*apiClient, error) {
	if host == "" {
		host = os.Getenv("DOCKER_HOST")
	}
	if host == "" {
		host = defaultSocket
	}
	u, err := url.Parse(host)
	if err != nil || u.Host == "" && u.Path == "" {
		return nil, fmt.Errorf("container: engine address %q: want unix:///PATH or tcp://HOST:PORT", host)
	}
	c := &apiClient{host: host, version: os.Getenv("DOCKER_API_VERSION")}
	tr := &http.Transport{MaxIdleConns: 8, IdleConnTimeout: 90 * time.Second}
	switch u.Scheme {
	case "unix":
		path := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		c.base = "http://docker"
	case "tcp", "http", "https":
		scheme := "http"
		if dir := os.Getenv("DOCKER_CERT_PATH"); u.Scheme == "https" || os.Getenv("DOCKER_TLS_VERIFY") != "" || dir != "" {
			cfg, err := tlsConfig(dir, os.Getenv("DOCKER_TLS_VERIFY") != "")
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = cfg
			scheme = "https"
		}
		c.base = scheme + "://" + u.Host
	default:
		return nil, fmt.Errorf("container: engine address %q: unsupported scheme %q (want unix or tcp)", host, u.Scheme)
	}
	c.hc = &http.Client{Transport: tr}
	return c, nil
}

// tlsConfig reads the client certificate and CA of DOCKER_CERT_PATH
// (default ~/.docker), as the docker command does.
func tlsConfig(dir string, verify bool) (*tls.Config, error) {
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".docker")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: !verify}
	if cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")); err == nil {
		cfg.Certificates = []tls.Certificate{cert}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("container: the client certificate in %s: %w", dir, err)
	}
	if ca, err := os.ReadFile(filepath.Join(dir, "ca.pem")); err == nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("container: %s has no PEM certificate", filepath.Join(dir, "ca.pem"))
		}
		cfg.RootCAs = pool
	} else if verify {
		return nil, fmt.Errorf("container: DOCKER_TLS_VERIFY is set but the CA is missing: %w", err)
	}
	return cfg, nil
}

// ping checks that the engine answers and settles the API version: the
// engine's own, capped at the newest this client speaks.
func (c *apiClient) ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &apiError{status: resp.StatusCode, msg: "ping: " + resp.Status}
	}
	if c.version != "" {
		return nil
	}
	v := resp.Header.Get("API-Version")
	switch {
	case v == "":
		c.version = minAPIVersion
	case versionLess(maxAPIVersion, v):
		c.version = maxAPIVersion
	case versionLess(v, minAPIVersion):
		return fmt.Errorf("the engine speaks API %s; at least %s (Docker 19.03) is needed", v, minAPIVersion)
	default:
		c.version = v
	}
	return nil
}

// versionLess compares API versions "1.41" numerically.
func versionLess(a, b string) bool {
	am, an, _ := strings.Cut(a, ".")
	bm, bn, _ := strings.Cut(b, ".")
	x, _ := strconv.Atoi(am)
	y, _ := strconv.Atoi(bm)
	if x != y {
		return x < y
	}
	x, _ = strconv.Atoi(an)
	y, _ = strconv.Atoi(bn)
	return x < y
}

// do calls the API: body, when not nil, is sent as JSON; header adds
// request headers. An answer outside 2xx is an *apiError; otherwise the
// caller reads and closes the response's body.
func (c *apiClient) do(ctx context.Context, method, path string, q url.Values, body any, header http.Header) (*http.Response, error) {
	if c.version == "" {
		if err := c.ping(ctx); err != nil {
			return nil, err
		}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + "/v" + c.version + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var m struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &m) == nil && m.Message != "" {
			msg = m.Message
		}
		if msg == "" {
			msg = resp.Status
		}
		return nil, &apiError{status: resp.StatusCode, msg: msg}
	}
	return resp, nil
}

// call is do for answers read as JSON into out (nil: discarded).
func (c *apiClient) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	resp, err := c.do(ctx, method, path, q, body, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("container: reading the engine's answer to %s %s: %w", method, path, err)
	}
	return nil
}

// The API's objects, with only the fields used. Field names are the
// API's; omitempty where the API's own client omits them, so that the
// engine applies the same defaults.
type (
	apiContainerConfig struct {
		Image        string              `json:"Image"`
		Entrypoint   []string            `json:"Entrypoint,omitempty"`
		Cmd          []string            `json:"Cmd,omitempty"`
		WorkingDir   string              `json:"WorkingDir,omitempty"`
		Env          []string            `json:"Env,omitempty"`
		Labels       map[string]string   `json:"Labels,omitempty"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
		HostConfig   apiHostConfig       `json:"HostConfig"`
	}
	apiHostConfig struct {
		NetworkMode    string                      `json:"NetworkMode,omitempty"`
		ExtraHosts     []string                    `json:"ExtraHosts,omitempty"`
		Init           *bool                       `json:"Init,omitempty"`
		Mounts         []apiMount                  `json:"Mounts,omitempty"`
		Memory         int64                       `json:"Memory,omitempty"`
		MemorySwap     int64                       `json:"MemorySwap,omitempty"`
		NanoCPUs       int64                       `json:"NanoCpus,omitempty"`
		DeviceRequests []apiDeviceRequest          `json:"DeviceRequests,omitempty"`
		PortBindings   map[string][]apiPortBinding `json:"PortBindings,omitempty"`
	}
	apiMount struct {
		Type     string `json:"Type"`
		Source   string `json:"Source"`
		Target   string `json:"Target"`
		ReadOnly bool   `json:"ReadOnly,omitempty"`
	}
	apiDeviceRequest struct {
		Driver       string     `json:"Driver"`
		DeviceIDs    []string   `json:"DeviceIDs"`
		Capabilities [][]string `json:"Capabilities"`
	}
	apiPortBinding struct {
		HostIP   string `json:"HostIp"`
		HostPort string `json:"HostPort"`
	}
	apiInspect struct {
		State *struct {
			Running   bool `json:"Running"`
			ExitCode  int  `json:"ExitCode"`
			OOMKilled bool `json:"OOMKilled"`
		} `json:"State"`
	}
	apiListed struct {
		ID     string            `json:"Id"`
		Labels map[string]string `json:"Labels"`
	}
)

// imageRef splits an image reference into the name and the tag or digest
// the pull endpoint takes: "latest" when it has neither, as the docker
// command pulls.
func imageRef(ref string) (name, tag string) {
	if n, d, ok := strings.Cut(ref, "@"); ok {
		return n, d
	}
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}

// registryAuth encodes credentials for the X-Registry-Auth header.
func registryAuth(a *Auth, server string) (string, error) {
	b, err := json.Marshal(struct {
		Username      string `json:"username"`
		Password      string `json:"password"`
		ServerAddress string `json:"serveraddress"`
	}{a.Username, a.Password, server})
	if err != nil {
		return "", err
	}
	return base64.URLEncoding.EncodeToString(b), nil
}

// close releases the client's idle connections.
func (c *apiClient) close() { c.hc.CloseIdleConnections() }
