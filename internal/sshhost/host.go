// Package sshhost is the driver for machines reached over SSH. It logs in
// with ssh-agent or key files, checks host keys against known_hosts,
// uploads the program content-addressed, starts meadowrun's agent on each
// machine (package agent) and reaches it through stream-local forwarding
// over one SSH connection per machine: every worker is one more channel on
// that connection, and no inbound port is opened.
//
// Workers are placed on the machine where their resources fit best. A
// machine that stops answering keepalives is dropped: its workers are
// reported lost, so the coordinator re-runs their tasks elsewhere, and the
// machine is reconnected in the background and used again when it returns.
package sshhost

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
)

// Options configure a Host.
type Options struct {
	// Machines are "[user@]host[:port]". The host may be a name of the
	// ssh config (ConfigFile), which then gives its address, user, port,
	// keys, known_hosts and jump hosts; the port defaults to 22.
	Machines []string
	// User logs in where a machine names none, before the ssh config's
	// User; "" is the ssh config's, else the local user name.
	User string
	// ConfigFile is the OpenSSH client configuration to read; "" means
	// ~/.ssh/config where it exists, "none" none.
	ConfigFile string
	// IdentityFiles are private keys to offer; none means ~/.ssh/id_ed25519,
	// id_ecdsa and id_rsa where they exist. Keys of ssh-agent
	// (SSH_AUTH_SOCK) are offered first unless NoAgent. A key's
	// certificate, KEY-cert.pub, is offered before it.
	IdentityFiles []string
	NoAgent       bool
	// KnownHostsFiles list the trusted host keys; none means
	// ~/.ssh/known_hosts.
	KnownHostsFiles []string
	// TrustOnFirstUse accepts the key of a machine that known_hosts does
	// not list, and appends it to the first KnownHostsFiles. A key that
	// differs from a listed one is refused regardless.
	TrustOnFirstUse bool
	// ConnectTimeout bounds connecting and logging in; 0 means the ssh
	// config's ConnectTimeout, else 10 s.
	ConnectTimeout time.Duration
	// KeepAlive is the interval of keepalive requests; a machine that
	// misses three in a row is considered lost. 0 means the ssh config's
	// ServerAliveInterval (and ServerAliveCountMax misses), else 1 s.
	KeepAlive time.Duration
	// GiveUpAfter is how long a job waits while every machine is
	// unreachable before its remaining tasks fail with ErrUnreachable;
	// 0 means 2 minutes, negative forever.
	GiveUpAfter time.Duration
	// RemoteDir is the agent's directory on every machine; "" means
	// ${XDG_CACHE_HOME:-$HOME/.cache}/meadowrun there.
	RemoteDir string
	// Binary is the program shipped to machines of this machine's platform;
	// "" means the running program.
	Binary string
	// Binaries name programs for other platforms, by "GOOS/GOARCH". Without
	// one, the program is cross-compiled when its source is at hand.
	Binaries map[string]string
	// Log receives one line per machine problem (unreachable, refused,
	// lost, back); nil means standard error.
	Log io.Writer
	// FromURL says the host was opened from an ssh:// URL: messages then
	// name the URL's parameters (key=FILE) rather than Options fields.
	FromURL bool
}

// Host is a set of machines reached over SSH.
type Host struct {
	opts Options
	// setTimeout and setKeepAlive: Options set them, over the ssh
	// config's.
	setTimeout, setKeepAlive bool

	auth     *auth
	trust    *trust
	bins     *binaries
	files    *fileCache
	cfg      *sshConfig
	auths    map[string]*auth  // by the ssh config's identity files
	trusts   map[string]*trust // by the ssh config's known_hosts files
	machines []*machine

	mu     sync.Mutex
	closed bool
	logged map[string]string // machine → last problem logged
}

// New checks opts and prepares the machines; it connects on first use.
func New(opts Options) (*Host, error) {
	if len(opts.Machines) == 0 {
		return nil, errors.New("ssh host: no machines given")
	}
	setTimeout, setKeepAlive := opts.ConnectTimeout > 0, opts.KeepAlive > 0
	if !setTimeout {
		opts.ConnectTimeout = 10 * time.Second
	}
	if !setKeepAlive {
		opts.KeepAlive = time.Second
	}
	if opts.GiveUpAfter == 0 {
		opts.GiveUpAfter = 2 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	h := &Host{opts: opts, setTimeout: setTimeout, setKeepAlive: setKeepAlive, logged: map[string]string{}, files: newFileCache(),
		auths: map[string]*auth{}, trusts: map[string]*trust{}}
	var err error
	if h.cfg, err = loadSSHConfig(opts.ConfigFile); err != nil {
		return nil, err
	}
	if h.auth, err = loadAuth(opts, nil, nil, false); err != nil {
		return nil, err
	}
	if h.trust, err = newTrust(opts.KnownHostsFiles, opts.TrustOnFirstUse, opts.setting("TrustOnFirstUse", "tofu=1")); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, s := range opts.Machines {
		e, jumps, err := h.resolve(s, 0)
		if err != nil {
			return nil, err
		}
		if seen[e.name] {
			return nil, fmt.Errorf("ssh host: machine %s given twice", e.name)
		}
		seen[e.name] = true
		for _, ep := range append(jumps, e) {
			if err := h.prepareEndpoint(ep); err != nil {
				return nil, err
			}
		}
		h.machines = append(h.machines, &machine{h: h, endpoint: e, jumps: jumps,
			workers: map[string]*worker{}, fits: map[string]fitResult{}, have: map[string]bool{}})
	}
	if h.bins, err = newBinaries(opts.Binary, opts.Binaries); err != nil {
		return nil, err
	}
	return h, nil
}

// endpoint is an SSH server to log in to: a machine, or a jump host on
// the way to one.
type endpoint struct {
	name string // user@host:port
	user string
	addr string
	// From the ssh config: identity files and known_hosts files of this
	// endpoint, and then the authentication and trust they make.
	keys       []string
	certs      []string // CertificateFile
	knownHosts []string
	keysOnly   bool // IdentitiesOnly: offer keys only
	tofu       bool // StrictHostKeyChecking accept-new
	// proxyCommand, if set, is run with sh to carry the connection on its
	// standard input and output.
	proxyCommand string
	auth         *auth
	trust        *trust
	// keyName is the name its host key is checked and recorded under in
	// known_hosts: addr, or the ssh config's HostKeyAlias.
	keyName string
	// connectTimeout bounds connecting and logging in; a machine that
	// leaves keepAliveMax keepalives sent every keepAlive unanswered is
	// lost.
	connectTimeout time.Duration
	keepAlive      time.Duration
	keepAliveMax   int
}

// maxJumps bounds a chain of ProxyJump hosts.
const maxJumps = 8

// resolve turns "[user@]host[:port]" into the endpoint to log in to and
// the jump hosts to go through, first to last, as the ssh config says.
// A user or port given in s wins over Options.User, which wins over the
// config's, as on OpenSSH's command line.
func (h *Host) resolve(s string, depth int) (*endpoint, []*endpoint, error) {
	u, hp := "", s
	if i := strings.LastIndex(s, "@"); i >= 0 {
		u, hp = s[:i], s[i+1:]
	}
	alias, port := hp, ""
	if hh, p, err := net.SplitHostPort(hp); err == nil {
		alias, port = hh, p
	}
	if alias == "" || strings.ContainsAny(alias, " /") || (strings.Contains(s, "@") && u == "") {
		return nil, nil, fmt.Errorf("ssh host: machine %q: want [user@]host[:port]", s)
	}
	hc := h.cfg.lookup(alias, cmp.Or(u, h.opts.User))
	host := alias
	if hc.HostName != "" {
		host = strings.ReplaceAll(strings.ReplaceAll(hc.HostName, "%h", alias), "%%", "%")
	}
	if port == "" {
		port = hc.Port
	}
	if port == "" {
		port = "22"
	}
	for _, v := range []string{h.opts.User, hc.User, localUser()} {
		if u == "" {
			u = v
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return nil, nil, fmt.Errorf("ssh host: machine %q: bad port %q", s, port)
	}
	if u == "" {
		return nil, nil, fmt.Errorf("ssh host: machine %q: no user to log in as: name one (user@host)", s)
	}
	addr := net.JoinHostPort(host, port)
	e := &endpoint{name: u + "@" + addr, user: u, addr: addr, keyName: addr,
		connectTimeout: h.opts.ConnectTimeout, keepAlive: h.opts.KeepAlive, keepAliveMax: 3,
		keysOnly: hc.IdentitiesOnly == "yes" && len(hc.IdentityFiles) > 0,
		tofu:     h.opts.TrustOnFirstUse || hc.StrictHostKeyChecking == "accept-new" || hc.StrictHostKeyChecking == "no" || hc.StrictHostKeyChecking == "off"}
	if hc.HostKeyAlias != "" {
		// As OpenSSH records it: the alias, without the port.
		e.keyName = net.JoinHostPort(hc.HostKeyAlias, "22")
	}
	if err := h.configTimes(e, hc); err != nil {
		return nil, nil, fmt.Errorf("ssh host: machine %q: ssh config: %w", s, err)
	}
	t := tokens{alias: alias, host: host, port: port, user: u, localUser: localUser()}
	for _, list := range []struct {
		from []string
		to   *[]string
	}{{hc.IdentityFiles, &e.keys}, {hc.CertificateFiles, &e.certs}, {hc.KnownHostsFiles, &e.knownHosts}} {
		for _, f := range list.from {
			x, err := h.cfg.expandTokens(f, t)
			if err != nil {
				return nil, nil, fmt.Errorf("ssh host: machine %q: ssh config: %w", s, err)
			}
			*list.to = append(*list.to, x)
		}
	}
	if hc.ProxyCommand != "" && !strings.EqualFold(hc.ProxyCommand, "none") {
		x, err := h.cfg.expandTokens(hc.ProxyCommand, t)
		if err != nil {
			return nil, nil, fmt.Errorf("ssh host: machine %q: ssh config: ProxyCommand: %w", s, err)
		}
		e.proxyCommand = x
	}
	var jumps []*endpoint
	if hc.ProxyJump != "" && !strings.EqualFold(hc.ProxyJump, "none") {
		if depth >= maxJumps {
			return nil, nil, fmt.Errorf("ssh host: machine %q: ssh config: ProxyJump chains more than %d hosts", s, maxJumps)
		}
		for _, j := range strings.Split(hc.ProxyJump, ",") {
			je, jj, err := h.resolve(strings.TrimPrefix(strings.TrimSpace(j), "ssh://"), depth+1)
			if err != nil {
				return nil, nil, fmt.Errorf("ssh host: machine %q: jump host: %w", s, err)
			}
			jumps = append(append(jumps, jj...), je)
		}
	}
	return e, jumps, nil
}

// configTimes applies the ssh config's ConnectTimeout and
// ServerAlive* to e, where Options do not set them.
func (h *Host) configTimes(e *endpoint, hc hostConfig) error {
	seconds := func(key, v string) (time.Duration, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%s %q: want a number of seconds", key, v)
		}
		return time.Duration(n) * time.Second, nil
	}
	if hc.ConnectTimeout != "" && !h.setTimeout {
		d, err := seconds("ConnectTimeout", hc.ConnectTimeout)
		if err != nil {
			return err
		}
		if d > 0 {
			e.connectTimeout = d
		}
	}
	if h.setKeepAlive {
		return nil
	}
	if hc.ServerAliveInterval != "" {
		d, err := seconds("ServerAliveInterval", hc.ServerAliveInterval)
		if err != nil {
			return err
		}
		if d > 0 { // 0, OpenSSH's "none", keeps meadowrun's own
			e.keepAlive = d
		}
	}
	if hc.ServerAliveCountMax != "" {
		n, err := strconv.Atoi(hc.ServerAliveCountMax)
		if err != nil || n < 1 {
			return fmt.Errorf("ServerAliveCountMax %q: want a positive number", hc.ServerAliveCountMax)
		}
		e.keepAliveMax = n
	}
	return nil
}

// prepareEndpoint gives e the authentication and trust its keys and
// known_hosts files make: the host's own unless the ssh config names
// some (known_hosts files given in Options win over the config's).
func (h *Host) prepareEndpoint(e *endpoint) error {
	e.auth, e.trust = h.auth, h.trust
	if len(e.keys) > 0 || len(e.certs) > 0 {
		k := fmt.Sprint(e.keysOnly, "\x00", strings.Join(e.keys, "\x00"), "\x00\x00", strings.Join(e.certs, "\x00"))
		if e.auth = h.auths[k]; e.auth == nil {
			o := h.opts
			// IdentitiesOnly: the config's keys and those named in Options.
			o.NoAgent = o.NoAgent || e.keysOnly
			a, err := loadAuth(o, e.keys, e.certs, e.keysOnly)
			if err != nil {
				return err
			}
			e.auth, h.auths[k] = a, a
		}
	}
	files := h.opts.KnownHostsFiles
	if len(files) == 0 {
		files = e.knownHosts
	}
	if (len(e.knownHosts) > 0 && len(h.opts.KnownHostsFiles) == 0) || e.tofu != h.opts.TrustOnFirstUse {
		k := fmt.Sprint(e.tofu, "\x00", strings.Join(files, "\x00"))
		if e.trust = h.trusts[k]; e.trust == nil {
			t, err := newTrust(files, e.tofu, h.opts.setting("TrustOnFirstUse", "tofu=1"))
			if err != nil {
				return err
			}
			e.trust, h.trusts[k] = t, t
		}
	}
	return nil
}

func localUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}

// Name implements driver.Host.
func (h *Host) Name() string {
	names := make([]string, len(h.machines))
	for i, m := range h.machines {
		names[i] = m.name
	}
	return "ssh host " + strings.Join(names, ",")
}

// Capabilities implements driver.Host: the agent enforces what the local
// host does.
func (h *Host) Capabilities() driver.Capabilities {
	return driver.Capabilities{CapturesOutput: true, ProcessExits: true, MemoryLimits: true}
}

// ExpectedDigest is the build ID workers must report: this program's.
func (h *Host) ExpectedDigest() string { return h.bins.selfDigest() }

// logf reports a machine's problem once (until it changes).
func (h *Host) logf(m *machine, msg string) {
	h.mu.Lock()
	if h.logged[m.name] == msg {
		h.mu.Unlock()
		return
	}
	h.logged[m.name] = msg
	h.mu.Unlock()
	fmt.Fprintf(h.opts.Log, "meadowrun: %s\n", msg)
}

// connectAll connects, in parallel, the machines never tried yet, and
// returns the errors of those that cannot be used. A machine that failed
// or was lost before is reconnected in the background instead, so that a
// dead machine does not delay every call by the connect timeout, unless no
// machine is up at all: then they are all tried again now.
func (h *Host) connectAll(ctx context.Context) map[*machine]error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := map[*machine]error{}
	connect := func(m *machine) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.ensure(ctx); err != nil {
				mu.Lock()
				errs[m] = err
				mu.Unlock()
			}
		}()
	}
	var later []*machine
	for _, m := range h.machines {
		m.mu.Lock()
		up, tried := m.up, !m.downAt.IsZero()
		m.mu.Unlock()
		if !up && tried {
			later = append(later, m)
			continue
		}
		connect(m)
	}
	wg.Wait()
	anyUp := false
	for _, m := range h.machines {
		if _, up := m.state(); up {
			anyUp = true
		}
	}
	for _, m := range later {
		if !anyUp {
			connect(m)
			continue
		}
		m.reconnectLater()
		m.mu.Lock()
		last := m.lastErr
		m.mu.Unlock()
		if last == nil {
			last = fmt.Errorf("%w: %s is not connected", driver.ErrUnreachable, m.name)
		}
		errs[m] = last
	}
	wg.Wait()
	return errs
}

// Fit implements driver.Host: the sum over reachable machines. It fails
// when no machine is reachable, or when the request fits none of them.
func (h *Host) Fit(ctx context.Context, r driver.Resources) (int, error) {
	errs := h.connectAll(ctx)
	total := 0
	var never []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, m := range h.machines {
		if errs[m] != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := m.fit(ctx, r)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				total += n
			case errors.Is(err, driver.ErrNeverFits):
				never = append(never, err)
			default:
				errs[m] = err
			}
		}()
	}
	wg.Wait()
	if total > 0 {
		// The job goes on without the machines that cannot be used;
		// without any, the error below names them all.
		for _, m := range h.machines {
			if err := errs[m]; err != nil {
				h.logf(m, err.Error()+" (carrying on with the other machines)")
			}
		}
		return total, nil
	}
	all := never
	for _, m := range h.machines {
		if errs[m] != nil {
			all = append(all, errs[m])
		}
	}
	if len(never) > 0 {
		return 0, fmt.Errorf("%w on any machine: %w", driver.ErrNeverFits, errors.Join(all...))
	}
	return 0, fmt.Errorf("ssh host: no machine can be used: %w", errors.Join(all...))
}

// Start implements driver.Host: the worker goes to the connected machine
// where it fits best (least room left over), trying the next when a
// machine is full.
func (h *Host) Start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, errors.New("ssh host: closed")
	}
	type cand struct {
		m    *machine
		left float64
	}
	var cands []cand
	for _, m := range h.machines {
		info, up := m.state()
		if !up {
			m.reconnectLater()
			continue
		}
		free := m.free(info)
		r := spec.Resources
		if r.LogicalCPU > free.LogicalCPU+1e-9 || r.MemoryBytes > free.MemoryBytes {
			continue
		}
		left := (free.LogicalCPU - r.LogicalCPU) / max(info.Capacity.LogicalCPU, 1)
		if info.Capacity.MemoryBytes > 0 {
			left += float64(free.MemoryBytes-r.MemoryBytes) / float64(info.Capacity.MemoryBytes)
		}
		cands = append(cands, cand{m, left})
	}
	slices.SortStableFunc(cands, func(a, b cand) int {
		switch {
		case a.left < b.left:
			return -1
		case a.left > b.left:
			return 1
		}
		return 0
	})
	var errs []error
	for _, c := range cands {
		w, err := c.m.start(ctx, spec)
		if err == nil {
			return w, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, driver.ErrNoCapacity) && !errors.Is(err, driver.ErrNeverFits) {
			h.logf(c.m, err.Error())
		}
		errs = append(errs, err)
	}
	if err := h.allGone(); err != nil {
		return nil, err
	}
	// Nothing fits now: machines that are down, full or broken may come
	// back, so the coordinator waits and asks again.
	return nil, fmt.Errorf("ssh host: %w on any connected machine: %w", driver.ErrNoCapacity, errors.Join(errs...))
}

// allGone returns an error wrapping ErrUnreachable when every machine has
// been unusable for longer than Options.GiveUpAfter.
func (h *Host) allGone() error {
	if h.opts.GiveUpAfter < 0 {
		return nil
	}
	var errs []error
	for _, m := range h.machines {
		m.mu.Lock()
		up, since, last := m.up, m.downAt, m.lastErr
		m.mu.Unlock()
		if up || since.IsZero() || time.Since(since) < h.opts.GiveUpAfter {
			return nil
		}
		if last != nil {
			errs = append(errs, last)
		}
	}
	return fmt.Errorf("ssh host: %w: no machine could be used for %v, giving up: %w", driver.ErrUnreachable, h.opts.GiveUpAfter, errors.Join(errs...))
}

// Close implements driver.Host: workers are killed with their sessions.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	for _, m := range h.machines {
		m.close()
	}
	h.bins.close()
	return nil
}

func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// jsonFit caches, per resources, what a machine's agent answered.
type fitResult struct {
	n   int
	err error
}

// Describe implements driver.Describer: it connects to every machine that
// is not up, at once, and describes each, or says why it cannot be used.
func (h *Host) Describe(ctx context.Context) []driver.Machine {
	out := make([]driver.Machine, len(h.machines))
	var wg sync.WaitGroup
	for i, m := range h.machines {
		wg.Go(func() {
			info, err := m.ensure(ctx)
			if err != nil {
				out[i] = driver.Machine{Name: m.name, Err: err}
				return
			}
			d := localhost.MachineOf(m.name, info.OS+"/"+info.Arch, info.Capacity, info.Limiter)
			m.mu.Lock()
			d.Booked = m.booked
			m.mu.Unlock()
			out[i] = d
		})
	}
	wg.Wait()
	return out
}
