// Package sshhost is the driver for machines reached over SSH: the SSH
// transport of the agent client (package agentclient). It reads the
// OpenSSH client configuration, logs in with ssh-agent or key files
// (through jump hosts or a proxy command), checks host keys against
// known_hosts, bootstraps meadowrun's agent over an exec session
// (uploading the program when the machine lacks it) and reaches the
// agent's socket through stream-local forwarding over one SSH connection
// per machine: every worker is one more channel on that connection, and
// no inbound port is opened.
//
// Everything above the transport (sessions, uploads, placement across
// machines, lost machines, reconnects, durable-job requests) is
// agentclient's, shared with every other host whose machines run the
// agent.
package sshhost

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// The SSH host is a driver and keeps durable jobs, through the agent
// client it embeds.
var (
	_ driver.Host      = (*Host)(nil)
	_ driver.JobKeeper = (*Host)(nil)
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
	// DockerHost, when set, is the DOCKER_HOST of the agents this host
	// starts.
	DockerHost string
	// ContainerMounts, when set, are the bind mounts of every worker
	// container of the agents this host starts.
	ContainerMounts []string
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
	// Programs, when not nil, is shared with other hosts (one per EC2
	// instance, say) instead of being made from Binary and Binaries;
	// Close leaves it open.
	Programs *agentclient.Programs
	// AgentEnv is more environment of the agents this host starts
	// (agentproto's EnvIMDS, EnvIdleShutdown and friends, for cloud
	// instances).
	AgentEnv map[string]string
	// OnNotice, if set, hears a machine's notices (agentclient.Options).
	OnNotice func(machine string, n agentproto.Notice)
}

// Host is a set of machines reached over SSH: an agentclient.Host whose
// machines' transport is SSH.
type Host struct {
	*agentclient.Host
	opts Options
	// setTimeout and setKeepAlive: Options set them, over the ssh
	// config's.
	setTimeout, setKeepAlive bool

	auth   *auth
	trust  *trust
	cfg    *sshConfig
	auths  map[string]*auth  // by the ssh config's identity files
	trusts map[string]*trust // by the ssh config's known_hosts files
	// machines are the transports of the machines, in order.
	machines []*machine
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
	h := &Host{opts: opts, setTimeout: setTimeout, setKeepAlive: setKeepAlive,
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
	var machines []agentclient.MachineConfig
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
		m := &machine{h: h, endpoint: e, jumps: jumps}
		h.machines = append(h.machines, m)
		machines = append(machines, agentclient.MachineConfig{Name: e.name, Transport: m,
			ConnectTimeout: e.connectTimeout, KeepAlive: e.keepAlive, KeepAliveMisses: e.keepAliveMax})
	}
	h.Host, err = agentclient.New(agentclient.Options{Kind: "ssh host", GiveUpAfter: opts.GiveUpAfter,
		Binary: opts.Binary, Binaries: opts.Binaries, Log: opts.Log, Programs: opts.Programs, OnNotice: opts.OnNotice}, machines)
	if err != nil {
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
