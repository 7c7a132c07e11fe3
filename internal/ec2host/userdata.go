package ec2host

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// hostKey is an SSH host key made for one instance: this process makes
// it, hands the private half to the instance in its user data (cloud-init
// installs it before sshd starts) and trusts only the public half, so
// that the first connection to a new instance is verified like every
// other, with no trust on first use.
type hostKey struct {
	private string // OpenSSH PEM
	public  string // authorized_keys form, "ssh-ed25519 AAAA..."
}

func newHostKey() (hostKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return hostKey{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "meadowrun-host-key")
	if err != nil {
		return hostKey{}, err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return hostKey{}, err
	}
	return hostKey{private: string(pem.EncodeToMemory(block)), public: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))}, nil
}

// userData is the instance's cloud-config: its host key, replacing the
// keys cloud-init would generate.
func userData(k hostKey) string {
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	b.WriteString("# Written by meadowrun: the host key the client trusts for this instance.\n")
	b.WriteString("ssh_deletekeys: true\n")
	b.WriteString("ssh_genkeytypes: []\n")
	b.WriteString("ssh_keys:\n")
	b.WriteString("  ed25519_private: |\n")
	for _, line := range strings.Split(strings.TrimSpace(k.private), "\n") {
		b.WriteString("    " + line + "\n")
	}
	fmt.Fprintf(&b, "  ed25519_public: %s\n", k.public)
	return b.String()
}

// HostKeyOfUserData returns the private host key that a cloud-config
// written by this package carries (for the instance simulator of the
// tests, which plays cloud-init's part), or "" when it carries none.
func HostKeyOfUserData(data string) string {
	var out []string
	in := false
	for _, line := range strings.Split(data, "\n") {
		switch {
		case strings.TrimSpace(line) == "ed25519_private: |":
			in = true
		case in && strings.HasPrefix(line, "    "):
			out = append(out, strings.TrimPrefix(line, "    "))
		case in:
			in = false
		}
	}
	if len(out) == 0 {
		return ""
	}
	return strings.Join(out, "\n") + "\n"
}
