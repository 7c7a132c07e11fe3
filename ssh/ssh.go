// Package ssh makes machines reached over SSH a meadowrun host: the first
// call connects to them, uploads the program where it is missing
// (content-addressed, never twice) and starts meadowrun's agent there;
// calls reuse one SSH connection per machine and the workers it keeps warm.
// Importing the package also registers the ssh:// scheme of
// meadowrun.OpenHost. See docs/ssh.md.
package ssh

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/sshhost"
)

// Options configure NewHost. The zero value logs in as the local
// user with ssh-agent's keys and ~/.ssh/id_*, and trusts the keys of
// ~/.ssh/known_hosts only.
type Options struct {
	// User logs in to machines that name none, before the ssh config's
	// User; "" means the ssh config's, else the local user name.
	User string
	// ConfigFile is the OpenSSH client configuration that says how to
	// reach a machine named in it (HostName, User, Port, IdentityFile,
	// IdentitiesOnly, CertificateFile, UserKnownHostsFile,
	// StrictHostKeyChecking accept-new,
	// HostKeyAlias, ConnectTimeout, ServerAliveInterval,
	// ServerAliveCountMax, ProxyJump, ProxyCommand; Host blocks, Match
	// blocks of host, originalhost, user, localuser, all and final, and
	// Include): "" means
	// ~/.ssh/config where it exists, "none" none.
	ConfigFile string
	// IdentityFiles are private keys to offer, after ssh-agent's (unless
	// NoAgent); none means ~/.ssh/id_ed25519, id_ecdsa and id_rsa. A
	// key's certificate, KEY-cert.pub, is offered before it.
	IdentityFiles []string
	NoAgent       bool
	// KnownHostsFiles list trusted host keys; none means
	// ~/.ssh/known_hosts.
	KnownHostsFiles []string
	// TrustOnFirstUse accepts and records the key of a machine that
	// known_hosts does not list. A key that differs from a listed one is
	// always refused.
	TrustOnFirstUse bool
	// ConnectTimeout bounds connecting and logging in to a machine; 0
	// means the ssh config's ConnectTimeout for it, else 10 s.
	ConnectTimeout time.Duration
	// KeepAlive is the interval of keepalives: a machine that misses three
	// in a row is lost, and its tasks run elsewhere. 0 means the ssh
	// config's ServerAliveInterval for it (and ServerAliveCountMax
	// misses), else 1 s.
	KeepAlive time.Duration
	// GiveUpAfter is how long a job waits while every machine is
	// unreachable (lost, or never reached) before its remaining tasks fail
	// with meadowrun.ErrUnreachable; results already received are kept. 0
	// means 2 minutes, negative waits forever.
	GiveUpAfter time.Duration
	// RemoteDir is the agent's directory on the machines; "" means
	// ${XDG_CACHE_HOME:-$HOME/.cache}/meadowrun.
	RemoteDir string
	// DockerHost is the address of the machines' container engine, for
	// container deployments ("unix:///run/user/1000/docker.sock" for a
	// rootless engine); "" means the DOCKER_HOST of the agent's login
	// environment, or the engine's default socket. It is set when the
	// agent starts: agents already running keep theirs.
	DockerHost string
	// ContainerMounts are bind mounts of every worker container on the
	// machines (data a job reads, a directory it writes to):
	// "HOST_PATH:CONTAINER_PATH", with ":ro" for read-only, paths of the
	// machine. Like DockerHost, they are set when the agent starts.
	ContainerMounts []string
	// Binaries are this program built for other platforms, by
	// "GOOS/GOARCH" ("linux/arm64"). Without one, machines of another
	// platform get the program cross-compiled when its source is at hand.
	Binaries map[string]string
	// Log receives a line per machine problem (unreachable, refused,
	// lost, back again); nil means standard error.
	Log io.Writer
}

// NewHost prepares machines given as "[user@]host[:port]" as one host. It
// checks the options and keys, and connects on first use: the first call
// connects to the machines, uploads this program where it is missing
// (content-addressed, never twice), and starts meadowrun's agent there;
// calls reuse the one SSH connection per machine and the workers it keeps
// warm. A job goes on with the machines that remain when some are
// unreachable or lost, and uses them again when they come back. Close
// stops the host's workers and disconnects; agents stay on the machines
// and exit after 30 idle minutes.
func NewHost(machines []string, opts Options) (*meadowrun.Host, error) {
	h, err := newHost(machines, opts, false)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	return h, nil
}

// newHost is NewHost; fromURL has messages name the URL's parameters.
func newHost(machines []string, opts Options, fromURL bool) (*meadowrun.Host, error) {
	d, err := sshhost.New(sshhost.Options{
		Machines: machines, User: opts.User, ConfigFile: opts.ConfigFile, IdentityFiles: opts.IdentityFiles, NoAgent: opts.NoAgent,
		KnownHostsFiles: opts.KnownHostsFiles, TrustOnFirstUse: opts.TrustOnFirstUse,
		ConnectTimeout: opts.ConnectTimeout, KeepAlive: opts.KeepAlive, GiveUpAfter: opts.GiveUpAfter, RemoteDir: opts.RemoteDir, DockerHost: opts.DockerHost,
		ContainerMounts: opts.ContainerMounts,
		Binaries:        opts.Binaries, Log: opts.Log, FromURL: fromURL,
	})
	if err != nil {
		return nil, err
	}
	return meadowrun.NewHost(d, meadowrun.HostOptions{URL: sshURL(machines, opts), Digest: d.ExpectedDigest()}), nil
}

func sshURL(machines []string, o Options) string {
	q := url.Values{}
	for _, k := range o.IdentityFiles {
		q.Add("key", k)
	}
	for _, k := range o.KnownHostsFiles {
		q.Add("known_hosts", k)
	}
	if o.TrustOnFirstUse {
		q.Set("tofu", "1")
	}
	if o.User != "" {
		q.Set("user", o.User)
	}
	if o.RemoteDir != "" {
		q.Set("dir", o.RemoteDir)
	}
	if o.DockerHost != "" {
		q.Set("docker_host", o.DockerHost)
	}
	if o.ConfigFile != "" {
		q.Set("config", o.ConfigFile)
	}
	if o.ConnectTimeout > 0 {
		q.Set("timeout", o.ConnectTimeout.String())
	}
	s := "ssh://" + strings.Join(machines, ",")
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

// openSSH opens "ssh://[user@]host[:port][,...][?key=F&known_hosts=F&
// tofu=1&user=U&dir=D&config=FILE&hosts=FILE&timeout=10s]". A hosts file lists one
// machine per line ('#' starts a comment).
func openSSH(ctx context.Context, u *url.URL) (*meadowrun.Host, error) {
	authority := u.Host
	if u.User != nil {
		authority = u.User.String() + "@" + u.Host
	}
	authority, _ = url.PathUnescape(authority)
	var machines []string
	for _, m := range strings.Split(authority, ",") {
		if m = strings.TrimSpace(m); m != "" {
			machines = append(machines, m)
		}
	}
	q := u.Query()
	for _, f := range q["hosts"] {
		ms, err := readHostsFile(f)
		if err != nil {
			return nil, err
		}
		machines = append(machines, ms...)
	}
	if len(machines) == 0 {
		return nil, fmt.Errorf("no machines: give ssh://[user@]host[:port][,more] or ssh://?hosts=FILE")
	}
	o := Options{IdentityFiles: q["key"], KnownHostsFiles: q["known_hosts"], User: q.Get("user"), RemoteDir: q.Get("dir"), ConfigFile: q.Get("config"),
		DockerHost: q.Get("docker_host")}
	if v := q.Get("tofu"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("tofu=%q: want true or false", v)
		}
		o.TrustOnFirstUse = b
	}
	if v := q.Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("timeout=%q: %w", v, err)
		}
		o.ConnectTimeout = d
	}
	// OpenHost names the error's origin ("meadowrun: opening host ...").
	return newHost(machines, o, true)
}

func readHostsFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

func init() {
	meadowrun.RegisterHostScheme("ssh", openSSH)
}
