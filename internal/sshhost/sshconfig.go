package sshhost

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// The OpenSSH client configuration (ssh_config(5)), for what it says
// about reaching a machine: HostName, User, Port, IdentityFile,
// IdentitiesOnly, CertificateFile, UserKnownHostsFile,
// StrictHostKeyChecking, HostKeyAlias,
// ConnectTimeout, ServerAliveInterval, ServerAliveCountMax, ProxyJump and
// ProxyCommand, in Host blocks, with Include. So a
// machine named as `ssh NAME` reaches it is reached the same way here.
// Match blocks are evaluated for host, originalhost, user, localuser,
// all and final; a block with another criterion (exec, localnetwork,
// tagged, canonical) is skipped. Every other keyword is ignored.

// sshConfig is a parsed configuration file and the files it includes.
type sshConfig struct {
	blocks []*cfgBlock
	home   string
}

// cfgBlock is the lines under one Host (or Match) line; the lines before
// the first are a block that matches every host.
type cfgBlock struct {
	patterns []string // "!" negates; none with all unset matches nothing
	all      bool
	params   []cfgParam
	// match holds the criteria of a Match block; unsupported is set when
	// one of them cannot be evaluated here (exec, localnetwork, tagged,
	// canonical), and the block is then skipped.
	match       []matchCriterion
	unsupported bool
}

// matchCriterion is one criterion of a Match line: keyword (host,
// originalhost, user, localuser, final) with its pattern list, negated by
// a "!" before the keyword.
type matchCriterion struct {
	keyword  string
	patterns string
	negate   bool
}

type cfgParam struct{ key, value string }

// hostConfig is what the configuration says about one host name.
type hostConfig struct {
	HostName      string
	User          string
	Port          string
	IdentityFiles []string
	// CertificateFiles are user certificates, each offered with the
	// identity key it certifies.
	CertificateFiles []string
	KnownHostsFiles  []string
	// ProxyJump or ProxyCommand, whichever the config gives first.
	ProxyJump    string
	ProxyCommand string
	// IdentitiesOnly ("yes") offers only the identity files named, not
	// ssh-agent's keys or the default ones.
	IdentitiesOnly string
	// StrictHostKeyChecking: "accept-new" (or "no", taken as accept-new:
	// a changed key is always refused) trusts unknown machines on first
	// use.
	StrictHostKeyChecking string
	// HostKeyAlias is the name known_hosts knows the machine's key by.
	HostKeyAlias string
	// ConnectTimeout, ServerAliveInterval (seconds) and
	// ServerAliveCountMax, as given.
	ConnectTimeout      string
	ServerAliveInterval string
	ServerAliveCountMax string
}

// maxIncludeDepth bounds Include recursion, as OpenSSH does.
const maxIncludeDepth = 16

// loadSSHConfig reads the configuration at path: "" means ~/.ssh/config
// where it exists, "none" none at all.
func loadSSHConfig(p string) (*sshConfig, error) {
	home, _ := os.UserHomeDir()
	c := &sshConfig{home: home}
	explicit := p != ""
	switch {
	case p == "none":
		return c, nil
	case p == "" && home == "":
		return c, nil
	case p == "":
		p = filepath.Join(home, ".ssh", "config")
	}
	if err := c.parseFile(p, 0); err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return c, nil
		}
		return nil, fmt.Errorf("ssh host: ssh config: %w", err)
	}
	return c, nil
}

func (c *sshConfig) parseFile(p string, depth int) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		key, args, err := splitConfigLine(sc.Text())
		if err != nil {
			return fmt.Errorf("%s:%d: %w", p, n, err)
		}
		switch key {
		case "":
		case "host":
			c.blocks = append(c.blocks, &cfgBlock{patterns: args})
		case "match":
			b, err := parseMatch(args)
			if err != nil {
				return fmt.Errorf("%s:%d: %w", p, n, err)
			}
			c.blocks = append(c.blocks, b)
		case "include":
			if depth >= maxIncludeDepth {
				return fmt.Errorf("%s:%d: Include nested more than %d deep", p, n, maxIncludeDepth)
			}
			for _, a := range args {
				pat := c.expandHome(a)
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(c.home, ".ssh", pat)
				}
				files, err := filepath.Glob(pat)
				if err != nil {
					return fmt.Errorf("%s:%d: Include %s: %w", p, n, a, err)
				}
				for _, inc := range files {
					if err := c.parseFile(inc, depth+1); err != nil {
						return err
					}
				}
			}
		default:
			if len(c.blocks) == 0 {
				c.blocks = append(c.blocks, &cfgBlock{all: true})
			}
			b := c.blocks[len(c.blocks)-1]
			b.params = append(b.params, cfgParam{key: key, value: strings.Join(args, " ")})
		}
	}
	return sc.Err()
}

// parseMatch parses the criteria of a Match line.
func parseMatch(args []string) (*cfgBlock, error) {
	b := &cfgBlock{}
	if len(args) == 0 {
		return nil, errors.New("a Match line without criteria")
	}
	for i := 0; i < len(args); i++ {
		kw := strings.ToLower(args[i])
		negate := strings.HasPrefix(kw, "!")
		kw = strings.TrimPrefix(kw, "!")
		switch kw {
		case "all":
			if len(args) > 1 && !negate {
				// "all" with other criteria: OpenSSH allows it only
				// alone, or after canonical/final.
				continue
			}
			b.all = !negate
			if negate {
				b.unsupported = true // matches nothing
			}
		case "final":
			// There is one pass here, and it is the final one.
			b.match = append(b.match, matchCriterion{keyword: kw, negate: negate})
		case "canonical":
			b.unsupported = true // no hostname canonicalization here
		case "host", "originalhost", "user", "localuser":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("a Match line with %s but no pattern", kw)
			}
			i++
			b.match = append(b.match, matchCriterion{keyword: kw, patterns: args[i], negate: negate})
		default:
			// exec, localnetwork, tagged, ...: not evaluated; their
			// argument is skipped.
			b.unsupported = true
			i++
		}
	}
	return b, nil
}

// matchState is what a Match block is evaluated against: the host name
// (after HostName, so far), the name given, the user to log in as (so
// far) and the local user.
type matchState struct {
	host, originalHost, user, localUser string
}

// matchesState evaluates a Match block.
func (b *cfgBlock) matchesState(st matchState) bool {
	if b.unsupported {
		return false
	}
	if b.all {
		return true
	}
	for _, m := range b.match {
		var ok bool
		switch m.keyword {
		case "final":
			ok = true
		case "host":
			ok = matchPatternList(st.host, m.patterns)
		case "originalhost":
			ok = matchPatternList(st.originalHost, m.patterns)
		case "user":
			ok = matchPatternList(st.user, m.patterns)
		case "localuser":
			ok = matchPatternList(st.localUser, m.patterns)
		}
		if ok == m.negate {
			return false
		}
	}
	return true
}

// matchPatternList matches s against a comma-separated list of patterns,
// "!" negating, as ssh_config(5)'s PATTERNS say.
func matchPatternList(s, list string) bool {
	return (&cfgBlock{patterns: strings.Split(list, ",")}).matches(s)
}

// splitConfigLine returns a line's lower-cased keyword and its arguments
// ("" for blank lines and comments). The keyword may be followed by
// whitespace or "="; arguments may be double-quoted.
func splitConfigLine(line string) (string, []string, error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil, nil
	}
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return strings.ToLower(line), nil, nil
	}
	key := strings.ToLower(line[:i])
	rest := strings.TrimLeft(line[i:], " \t")
	if strings.HasPrefix(rest, "=") {
		rest = strings.TrimLeft(rest[1:], " \t")
	}
	var args []string
	for rest != "" {
		var a string
		if rest[0] == '"' {
			j := strings.IndexByte(rest[1:], '"')
			if j < 0 {
				return "", nil, fmt.Errorf("unterminated quote in %q", line)
			}
			a, rest = rest[1:j+1], rest[j+2:]
		} else if j := strings.IndexAny(rest, " \t"); j >= 0 {
			a, rest = rest[:j], rest[j:]
		} else {
			a, rest = rest, ""
		}
		args = append(args, a)
		rest = strings.TrimLeft(rest, " \t")
	}
	return key, args, nil
}

// matches reports whether host matches the block: no negated pattern
// matches it and some other does.
func (b *cfgBlock) matches(host string) bool {
	if b.all {
		return true
	}
	host = strings.ToLower(host)
	ok := false
	for _, p := range b.patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.ToLower(strings.TrimPrefix(p, "!"))
		if m, _ := path.Match(p, host); m {
			if neg {
				return false
			}
			ok = true
		}
	}
	return ok
}

// lookup applies the blocks that match host, in order: the first value
// of a keyword wins, except IdentityFile and CertificateFile, whose values
// add up. user is the user named with the machine, if any, which Match
// user blocks see before the config's User.
func (c *sshConfig) lookup(host, user string) hostConfig {
	var hc hostConfig
	state := func() matchState {
		st := matchState{host: host, originalHost: host, user: user, localUser: localUser()}
		if hc.HostName != "" {
			st.host = strings.ReplaceAll(strings.ReplaceAll(hc.HostName, "%h", host), "%%", "%")
		}
		if st.user == "" {
			st.user = hc.User
		}
		if st.user == "" {
			st.user = st.localUser
		}
		return st
	}
	// The keywords of one value, as given or (lower) in lower case.
	single := map[string]*string{"hostname": &hc.HostName, "user": &hc.User, "port": &hc.Port,
		"hostkeyalias": &hc.HostKeyAlias, "connecttimeout": &hc.ConnectTimeout,
		"serveraliveinterval": &hc.ServerAliveInterval, "serveralivecountmax": &hc.ServerAliveCountMax}
	lower := map[string]*string{"identitiesonly": &hc.IdentitiesOnly, "stricthostkeychecking": &hc.StrictHostKeyChecking}
	seenKnown := false
	for _, b := range c.blocks {
		if b.match != nil || b.unsupported {
			if !b.matchesState(state()) {
				continue
			}
		} else if !b.matches(host) {
			continue
		}
		for _, p := range b.params {
			if dst := single[p.key]; dst != nil && *dst == "" {
				*dst = p.value
			}
			if dst := lower[p.key]; dst != nil && *dst == "" {
				*dst = strings.ToLower(p.value)
			}
			switch p.key {
			case "proxyjump", "proxycommand":
				if hc.ProxyJump == "" && hc.ProxyCommand == "" {
					if p.key == "proxyjump" {
						hc.ProxyJump = p.value
					} else {
						hc.ProxyCommand = p.value
					}
				}
			case "identityfile":
				hc.IdentityFiles = append(hc.IdentityFiles, p.value)
			case "certificatefile":
				hc.CertificateFiles = append(hc.CertificateFiles, p.value)
			case "userknownhostsfile":
				if !seenKnown {
					seenKnown = true
					hc.KnownHostsFiles = strings.Fields(p.value)
				}
			}
		}
	}
	return hc
}

func (c *sshConfig) expandHome(p string) string {
	if c.home != "" && (p == "~" || strings.HasPrefix(p, "~/")) {
		return c.home + p[1:]
	}
	return p
}

// expandTokens expands ~ and the tokens of ssh_config(5) that a file
// name may use: %d (home), %h (host name), %n (the name as given), %p
// (port), %r (remote user), %u (local user) and %%.
func (c *sshConfig) expandTokens(s string, t tokens) (string, error) {
	s = c.expandHome(s)
	vals := map[byte]string{'%': "%", 'd': c.home, 'h': t.host, 'n': t.alias, 'p': t.port, 'r': t.user, 'u': t.localUser}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", fmt.Errorf("%q ends with %%", s)
		}
		i++
		v, ok := vals[s[i]]
		if !ok {
			return "", fmt.Errorf("%q: token %%%c is not supported", s, s[i])
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// tokens are the values of expandTokens's tokens.
type tokens struct{ alias, host, port, user, localUser string }
