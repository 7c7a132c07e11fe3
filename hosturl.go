package meadowrun

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// HostOpener opens the host that a URL names. It is called at most once
// per URL in a process: OpenHost keeps the host it returns, so that its
// workers stay warm between calls.
type HostOpener func(ctx context.Context, u *url.URL) (*Host, error)

// ErrUnknownHostScheme is wrapped when a host URL's scheme has no opener.
var ErrUnknownHostScheme = errors.New("meadowrun: unknown host scheme")

var hostSchemes = struct {
	mu     sync.Mutex
	open   map[string]HostOpener
	opened map[string]*Host
}{open: map[string]HostOpener{}, opened: map[string]*Host{}}

// RegisterHostScheme makes OpenHost open URLs of scheme with open. Host
// drivers call it from an init function, the way database/sql drivers
// register themselves; the CLI's --host flag then accepts their URLs. It
// panics when the scheme is already registered.
func RegisterHostScheme(scheme string, open HostOpener) {
	hostSchemes.mu.Lock()
	defer hostSchemes.mu.Unlock()
	if _, dup := hostSchemes.open[scheme]; dup {
		panic(fmt.Sprintf("meadowrun: host scheme %q registered twice", scheme))
	}
	hostSchemes.open[scheme] = open
}

// HostSchemes lists the registered host URL schemes, sorted.
func HostSchemes() []string {
	hostSchemes.mu.Lock()
	defer hostSchemes.mu.Unlock()
	return slices.Sorted(maps.Keys(hostSchemes.open))
}

// OpenHost opens the host that rawURL names:
//
//	local                 this machine (Local), the default
//	local://?cpu=2&memory=4   this machine, with a smaller budget (see package local)
//
// and the schemes that host packages register when they are imported:
// inprocess:// (package inprocess), ssh:// (package ssh), and later k8s://,
// ec2:// and azure://. A bare scheme ("local") is accepted for "local://". The
// host is opened once per URL in a process; the returned Host remembers
// its URL (see HostURL), so that work submitted to it can be resumed by
// another process.
func OpenHost(ctx context.Context, rawURL string) (*Host, error) {
	if rawURL == "" {
		rawURL = "local"
	}
	s := rawURL
	if !strings.Contains(s, ":") {
		s += "://"
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: host URL %q: %w", rawURL, err)
	}
	hostSchemes.mu.Lock()
	defer hostSchemes.mu.Unlock()
	if h, ok := hostSchemes.opened[rawURL]; ok {
		h.mu.Lock()
		closed := h.closed
		h.mu.Unlock()
		if !closed {
			return h, nil
		}
		// Closed (a command of the CLI run twice in one process): opened
		// again below.
	}
	open, ok := hostSchemes.open[u.Scheme]
	if !ok {
		return nil, fmt.Errorf("%w %q in %q: known schemes are %s", ErrUnknownHostScheme, u.Scheme, rawURL,
			strings.Join(slices.Sorted(maps.Keys(hostSchemes.open)), ", "))
	}
	h, err := open(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: opening host %q: %w", rawURL, err)
	}
	if h.url != rawURL && !h.shared {
		// The host remembers the URL it was opened with (see HostURL).
		h.url = rawURL
	}
	hostSchemes.opened[rawURL] = h
	return h, nil
}

// HostURL returns the URL that reopens h in another process: "local" for
// Local (and nil), and the URL of hosts that OpenHost returned or whose
// package gave them one. ok is false for a host that cannot be reopened.
func HostURL(h *Host) (url string, ok bool) {
	u := h.URL()
	return u, u != ""
}

func init() {
	RegisterHostScheme("local", openLocal)
}

// floatParams reads the numeric query parameters of a host URL, refusing
// unknown ones.
func floatParams(u *url.URL, names ...string) (map[string]float64, error) {
	out := map[string]float64{}
	for k, vs := range u.Query() {
		if !slices.Contains(names, k) {
			return nil, fmt.Errorf("unknown parameter %q (known: %s)", k, strings.Join(names, ", "))
		}
		v, err := strconv.ParseFloat(vs[len(vs)-1], 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("parameter %s=%q: want a positive number", k, vs[len(vs)-1])
		}
		out[k] = v
	}
	return out, nil
}

func openLocal(ctx context.Context, u *url.URL) (*Host, error) {
	if u.Host != "" && u.Host != "localhost" || u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("the local host takes no address or path, only ?cpu=N&memory=GB")
	}
	p, err := floatParams(u, "cpu", "memory")
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return Local(), nil
	}
	return newLocalHost(ctx, "", p["cpu"], p["memory"])
}
