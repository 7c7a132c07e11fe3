package sshhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/tracepoint"
)

// auth collects the authentication methods: the keys of ssh-agent (when
// SSH_AUTH_SOCK is set and Options.NoAgent is not), then the key files.
type auth struct {
	methods []ssh.AuthMethod
	tried   []string
	certs   []string // certificate files to pair with the keys
}

// loadAuth loads the keys of opts, after those of configKeys (identity
// files an ssh config names for one endpoint: like OpenSSH, those that
// do not exist or need a passphrase are passed over). With only, the
// default key files are not tried. A key file's certificate (FILE-cert.pub,
// or one of certs, the ssh config's CertificateFile) is offered before
// the key itself. Having no key at all is not an error here:
// prepareEndpoint reports it for the endpoint.
func loadAuth(opts Options, configKeys, certs []string, only bool) (*auth, error) {
	a := &auth{certs: certs}
	if err := a.addKeyFiles(configKeys, false, " (from the ssh config)"); err != nil {
		return nil, err
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" && !opts.NoAgent {
		if c, err := net.Dial("unix", sock); err == nil {
			a.methods = append(a.methods, ssh.PublicKeysCallback(sshagent.NewClient(c).Signers))
			a.tried = append(a.tried, "ssh-agent")
		}
	}
	files := opts.IdentityFiles
	explicit := len(files) > 0
	if !explicit && !only {
		if home, err := os.UserHomeDir(); err == nil {
			for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				files = append(files, filepath.Join(home, ".ssh", n))
			}
		}
	}
	if err := a.addKeyFiles(files, explicit, ""); err != nil {
		return nil, err
	}
	return a, nil
}

// certSigner returns the signer of the certificate in file for the key
// of s, or nil when file does not exist or certifies another key.
func certSigner(file string, s ssh.Signer) (ssh.Signer, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, err
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("a %s key, not a certificate", pub.Type())
	}
	if !bytes.Equal(cert.Key.Marshal(), s.PublicKey().Marshal()) {
		return nil, nil
	}
	return ssh.NewCertSigner(cert, s)
}

// addKeyFiles offers the keys of files. A file that is missing or needs
// a passphrase is an error when strict, and passed over otherwise; origin
// says where the files were named.
func (a *auth) addKeyFiles(files []string, strict bool, origin string) error {
	var signers []ssh.Signer
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if strict {
				return fmt.Errorf("ssh host: identity file%s: %w", origin, err)
			}
			continue
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			var pp *ssh.PassphraseMissingError
			if errors.As(err, &pp) {
				if strict {
					return fmt.Errorf("ssh host: identity file %s is protected by a passphrase: load it into ssh-agent (ssh-add %s) instead", f, f)
				}
				continue
			}
			return fmt.Errorf("ssh host: identity file %s%s: %w", f, origin, err)
		}
		for _, c := range append([]string{f + "-cert.pub"}, a.certs...) {
			cs, err := certSigner(c, s)
			if err != nil {
				return fmt.Errorf("ssh host: certificate %s%s: %w", c, origin, err)
			}
			if cs != nil {
				signers = append(signers, cs)
				a.tried = append(a.tried, c)
			}
		}
		signers = append(signers, s)
		a.tried = append(a.tried, f)
	}
	if len(signers) > 0 {
		a.methods = append(a.methods, ssh.PublicKeys(signers...))
	}
	return nil
}

// trust checks host keys against known_hosts files.
type trust struct {
	files    []string
	tofu     bool
	tofuHint string

	mu sync.Mutex
	cb ssh.HostKeyCallback
}

// newTrust trusts the keys of files (none: ~/.ssh/known_hosts), and with
// tofu the keys of machines they do not list yet; tofuHint names the
// option that turns tofu on, for messages.
func newTrust(files []string, tofu bool, tofuHint string) (*trust, error) {
	if len(files) == 0 {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("ssh host: known_hosts: %w", err)
		}
		files = []string{filepath.Join(home, ".ssh", "known_hosts")}
	}
	t := &trust{files: files, tofu: tofu, tofuHint: tofuHint}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *trust) reload() error {
	var existing []string
	for _, f := range t.files {
		if _, err := os.Stat(f); err == nil {
			existing = append(existing, f)
		}
	}
	cb := ssh.HostKeyCallback(func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} })
	if len(existing) > 0 {
		var err error
		if cb, err = knownhosts.New(existing...); err != nil {
			return fmt.Errorf("ssh host: reading known_hosts: %w", err)
		}
	}
	t.mu.Lock()
	t.cb = cb
	t.mu.Unlock()
	return nil
}

// algorithms lists the host key algorithms known_hosts has for addr, so
// that the server is asked for a key that can be checked.
func (t *trust) algorithms(addr string) []string {
	t.mu.Lock()
	cb := t.cb
	t.mu.Unlock()
	var ke *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{}, probeKey{}); !errors.As(err, &ke) {
		return nil
	}
	var algs []string
	for _, k := range ke.Want {
		switch typ := k.Key.Type(); typ {
		case ssh.KeyAlgoRSA:
			algs = append(algs, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			algs = append(algs, typ)
		}
	}
	return algs
}

// probeKey is a key no host has, used to list the known ones.
type probeKey struct{}

func (probeKey) Type() string                        { return "meadowrun-probe" }
func (probeKey) Marshal() []byte                     { return []byte("meadowrun-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe") }

// check is the HostKeyCallback for machine name, whose key known_hosts
// lists under keyName ("host:port", or the ssh config's HostKeyAlias).
func (t *trust) check(name, keyName string) ssh.HostKeyCallback {
	return func(_ string, remote net.Addr, key ssh.PublicKey) error {
		hostname := keyName
		t.mu.Lock()
		cb := t.cb
		t.mu.Unlock()
		err := cb(hostname, remote, key)
		var ke *knownhosts.KeyError
		if err == nil || !errors.As(err, &ke) {
			return err
		}
		fp := ssh.FingerprintSHA256(key)
		if len(ke.Want) > 0 {
			w := ke.Want[0]
			return fmt.Errorf("%w: %s offered the %s key %s, but %s:%d has a different key for it: the machine was replaced or someone is in the middle; if it was reinstalled, remove the old entry (ssh-keygen -R %s) and check the new fingerprint",
				driver.ErrHostKey, name, key.Type(), fp, w.Filename, w.Line, knownhosts.Normalize(hostname))
		}
		if !t.tofu {
			return fmt.Errorf("%w: %s is not in %s (it offered the %s key %s): check the fingerprint and add it (ssh-keyscan), or opt in to trusting machines on first use (%s)",
				driver.ErrHostKey, name, strings.Join(t.files, ", "), key.Type(), fp, t.tofuHint)
		}
		line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key) + "\n"
		if err := appendFile(t.files[0], []byte(line)); err != nil {
			return fmt.Errorf("ssh host: trusting %s on first use: %w", name, err)
		}
		return t.reload()
	}
}

func appendFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// dial opens the SSH connection to m, through its jump hosts if it has
// any; closing it (or its breaking) closes theirs.
func (h *Host) dial(ctx context.Context, m *machine) (*ssh.Client, error) {
	var chain []*ssh.Client
	closeChain := func() {
		for i := len(chain) - 1; i >= 0; i-- {
			chain[i].Close()
		}
	}
	var via *ssh.Client
	for _, j := range m.jumps {
		c, err := h.dialEndpoint(ctx, j, via)
		if err != nil {
			closeChain()
			return nil, fmt.Errorf("%w (jump host on the way to %s)", err, m.name)
		}
		chain = append(chain, c)
		via = c
	}
	c, err := h.dialEndpoint(ctx, m.endpoint, via)
	if err != nil {
		closeChain()
		return nil, err
	}
	if len(chain) > 0 {
		go func() {
			c.Wait()
			closeChain()
		}()
	}
	return c, nil
}

// dialEndpoint logs in to e, over a TCP connection of its own or one
// forwarded by via.
func (h *Host) dialEndpoint(ctx context.Context, e *endpoint, via *ssh.Client) (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{
		User:              e.user,
		Auth:              e.auth.methods,
		HostKeyCallback:   e.trust.check(e.name, e.keyName),
		HostKeyAlgorithms: e.trust.algorithms(e.keyName),
		Timeout:           e.connectTimeout,
	}
	// Connecting and the handshake must not hang on a machine that
	// accepts and then stalls.
	ctx, cancel := context.WithTimeout(ctx, e.connectTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	switch {
	case e.proxyCommand != "":
		nc, err = startProxyCommand(e.proxyCommand, e.addr)
	case via != nil:
		nc, err = via.DialContext(ctx, "tcp", e.addr)
	default:
		d := net.Dialer{}
		if nc, err = d.DialContext(ctx, "tcp", e.addr); err == nil {
			nc = quickAck(nc)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", driver.ErrUnreachable, e.name, err)
	}
	tracepoint.Mark("sshhost: TCP connected to " + e.addr)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	c, chans, reqs, err := ssh.NewClientConn(nc, e.addr, cfg)
	if err == nil && !stop() {
		c.Close()
		err = fmt.Errorf("no answer within %s: %w", e.connectTimeout, ctx.Err())
	}
	if err != nil {
		nc.Close()
		switch {
		case errors.Is(err, driver.ErrHostKey):
			return nil, err
		case strings.Contains(err.Error(), "unable to authenticate") && len(e.auth.methods) == 0:
			return nil, fmt.Errorf("%w: no key to log in to %s with: start ssh-agent with a key loaded, or name a key file (%s, or IdentityFile in the ssh config)",
				driver.ErrAuth, e.name, h.opts.setting("IdentityFiles", "key=FILE"))
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%w: %s refused user %q with the keys tried (%s): check the user name and that one of these keys is in the machine's authorized_keys",
				driver.ErrAuth, e.name, e.user, strings.Join(e.auth.tried, ", "))
		}
		if pc, ok := nc.(*proxyConn); ok {
			if said := pc.said(); said != "" {
				err = fmt.Errorf("%w; ProxyCommand %q said: %s", err, e.proxyCommand, said)
			}
		}
		return nil, fmt.Errorf("%w: %s: ssh handshake: %w", driver.ErrUnreachable, e.name, err)
	}
	tracepoint.Markf("sshhost: SSH handshake and login done (%s)", c.ServerVersion())
	return ssh.NewClient(c, chans, reqs), nil
}

// run runs a shell command on m's connection with stdin, returning its
// standard output, or an error carrying its standard error.
func run(c *ssh.Client, script string, stdin io.Reader) ([]byte, error) {
	s, err := c.NewSession()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	if stdin != nil {
		s.Stdin = stdin
	}
	if err := s.Run(shellCommand(script)); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		return out.Bytes(), fmt.Errorf("%w: %s", err, msg)
	}
	return out.Bytes(), nil
}

// shellCommand runs script with /bin/sh whatever the user's login shell
// (sshd hands the command to it: tcsh or fish would not take sh syntax).
// The quoting is understood alike by sh, bash, zsh, csh, tcsh and fish:
// the script in single quotes, each single quote in it closed, escaped
// with a backslash and reopened. Scripts must be one line and hold no
// backslash next to a quote or another backslash (fish reads those as
// escapes even within single quotes).
func shellCommand(script string) string {
	return "exec /bin/sh -c '" + strings.ReplaceAll(script, "'", `'\''`) + "'"
}
