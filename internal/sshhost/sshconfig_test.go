package sshhost

import (
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"

	"golang.org/x/crypto/ssh"
)

func writeConfig(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSSHConfigLookup(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	writeConfig(t, home, ".ssh/conf.d/gpu.conf", `
Host gpu-*
    User trainer
    IdentityFile ~/.ssh/gpu_key
`)
	cfg := writeConfig(t, home, ".ssh/config", `
# Settings before any Host line apply to every host.
IdentityFile ~/.ssh/id_%h

Include conf.d/*.conf

Host box "quoted name"
    HostName=10.0.0.7
    Port 2222
    User alice
    User bob
    UserKnownHostsFile /k1 /k2
    UserKnownHostsFile /k3

Host *.internal !bastion.internal
    ProxyJump bastion.internal
    HostName %h.example

Host strict
    StrictHostKeyChecking Accept-New
    IdentitiesOnly yes

Host proxied
    ProxyCommand ssh -W %h:%p bastion
    ProxyJump ignored-after-proxycommand

Match exec "test -f /nonexistent"
    User never

Host *
    User fallback
    Port 22
`)
	c, err := loadSSHConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		want hostConfig
	}{
		{"box", hostConfig{HostName: "10.0.0.7", Port: "2222", User: "alice",
			IdentityFiles: []string{"~/.ssh/id_%h"}, KnownHostsFiles: []string{"/k1", "/k2"}}},
		{"quoted name", hostConfig{HostName: "10.0.0.7", Port: "2222", User: "alice",
			IdentityFiles: []string{"~/.ssh/id_%h"}, KnownHostsFiles: []string{"/k1", "/k2"}}},
		{"gpu-3", hostConfig{User: "trainer", Port: "22", IdentityFiles: []string{"~/.ssh/id_%h", "~/.ssh/gpu_key"}}},
		{"db.internal", hostConfig{HostName: "%h.example", ProxyJump: "bastion.internal", User: "fallback", Port: "22",
			IdentityFiles: []string{"~/.ssh/id_%h"}}},
		{"strict", hostConfig{StrictHostKeyChecking: "accept-new", IdentitiesOnly: "yes", User: "fallback", Port: "22",
			IdentityFiles: []string{"~/.ssh/id_%h"}}},
		{"proxied", hostConfig{ProxyCommand: "ssh -W %h:%p bastion", User: "fallback", Port: "22",
			IdentityFiles: []string{"~/.ssh/id_%h"}}},
		{"bastion.internal", hostConfig{User: "fallback", Port: "22", IdentityFiles: []string{"~/.ssh/id_%h"}}},
		{"BOX", hostConfig{HostName: "10.0.0.7", Port: "2222", User: "alice",
			IdentityFiles: []string{"~/.ssh/id_%h"}, KnownHostsFiles: []string{"/k1", "/k2"}}},
	} {
		if got := c.lookup(tc.host, ""); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("lookup(%q) =\n %+v, want\n %+v", tc.host, got, tc.want)
		}
	}
	got, err := c.expandTokens("~/.ssh/id_%h_%p_%r_%n_%%", tokens{alias: "box", host: "10.0.0.7", port: "2222", user: "alice"})
	if err != nil || got != home+"/.ssh/id_10.0.0.7_2222_alice_box_%" {
		t.Errorf("expandTokens = %q, %v", got, err)
	}
	if _, err := c.expandTokens("%C", tokens{}); err == nil || !strings.Contains(err.Error(), "%C") {
		t.Errorf("expandTokens(%%C) = %v, want an error naming the token", err)
	}
}

func TestSSHConfigFiles(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	// No ~/.ssh/config: nothing configured, no error.
	c, err := loadSSHConfig("")
	if err != nil || len(c.blocks) != 0 {
		t.Fatalf("without ~/.ssh/config: %v, %d blocks", err, len(c.blocks))
	}
	// A file named explicitly must exist.
	if _, err := loadSSHConfig(filepath.Join(home, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing explicit config: %v", err)
	}
	// "none" reads nothing even where ~/.ssh/config exists.
	writeConfig(t, home, ".ssh/config", "Host x\n  User y\n")
	if c, err := loadSSHConfig("none"); err != nil || c.lookup("x", "").User != "" {
		t.Fatalf(`"none": %v, %+v`, err, c.lookup("x", ""))
	}
	if c, err := loadSSHConfig(""); err != nil || c.lookup("x", "").User != "y" {
		t.Fatalf("~/.ssh/config: %v, %+v", err, c.lookup("x", ""))
	}
	// An unterminated quote names the file and line.
	bad := writeConfig(t, home, "bad", "Host a\n  User \"oops\n")
	if _, err := loadSSHConfig(bad); err == nil || !strings.Contains(err.Error(), "bad:2") {
		t.Fatalf("bad quote: %v", err)
	}
	// An Include of itself stops at the nesting limit.
	loop := writeConfig(t, home, "loop", "Include "+filepath.Join(home, "loop")+"\n")
	if _, err := loadSSHConfig(loop); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Fatalf("Include loop: %v", err)
	}
}

func TestResolveUsesTheSSHConfig(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	cfg := writeConfig(t, home, ".ssh/config", `
Host inner
    HostName 10.1.0.5
    User deploy
    ProxyJump outer,jumper@mid:2200
Host outer
    HostName 192.0.2.1
    User ops
Host mid
    ProxyJump none
Host loop
    ProxyJump loop
`)
	h := &Host{opts: Options{ConfigFile: cfg}}
	var err error
	if h.cfg, err = loadSSHConfig(cfg); err != nil {
		t.Fatal(err)
	}
	e, jumps, err := h.resolve("inner", 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range jumps {
		names = append(names, j.name)
	}
	if e.name != "deploy@10.1.0.5:22" || !reflect.DeepEqual(names, []string{"ops@192.0.2.1:22", "jumper@mid:2200"}) {
		t.Fatalf("inner = %s via %v", e.name, names)
	}
	// What the machine's name says wins over the config; Options.User
	// wins over the config's User.
	if e, _, _ := h.resolve("root@inner:2022", 0); e.name != "root@10.1.0.5:2022" {
		t.Fatalf("root@inner:2022 = %s", e.name)
	}
	h.opts.User = "opt"
	if e, _, _ := h.resolve("inner", 0); e.name != "opt@10.1.0.5:22" {
		t.Fatalf("with Options.User: %s", e.name)
	}
	if _, _, err := h.resolve("loop", 0); err == nil || !strings.Contains(err.Error(), "ProxyJump chains") {
		t.Fatalf("ProxyJump loop: %v", err)
	}
	for _, bad := range []string{"@host", "host:0", "host:x", "a/b"} {
		if _, _, err := h.resolve(bad, 0); err == nil {
			t.Errorf("resolve(%q) accepted", bad)
		}
	}
}

func TestIdentitiesOnlyOffersOnlyTheNamedKeys(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	writeKey := func(p string) {
		_, priv, _ := ed25519.GenerateKey(nil)
		block, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			t.Fatal(err)
		}
		writeConfig(t, home, p, string(pem.EncodeToMemory(block)))
	}
	writeKey(".ssh/id_ed25519") // a default key
	writeKey("special")
	cfg := writeConfig(t, home, ".ssh/config", `
Host only
    IdentityFile ~/special
    IdentitiesOnly yes
Host both
    IdentityFile ~/special
`)
	h, err := New(Options{Machines: []string{"u@only", "u@both"}, ConfigFile: cfg})
	if err != nil {
		t.Fatal(err)
	}
	special, def := filepath.Join(home, "special"), filepath.Join(home, ".ssh", "id_ed25519")
	if got := h.machines[0].auth.tried; !reflect.DeepEqual(got, []string{special}) {
		t.Errorf("IdentitiesOnly: keys offered %v, want only %s", got, special)
	}
	if got := h.machines[1].auth.tried; !reflect.DeepEqual(got, []string{special, def}) {
		t.Errorf("without IdentitiesOnly: keys offered %v, want %s then the default", got, special)
	}
}

func TestSSHConfigTimesAndHostKeyAlias(t *testing.T) {
	home := t.TempDir()
	cfg := writeConfig(t, home, "config", `
Host slow
    HostName 10.1.0.7
    Port 2200
    ConnectTimeout 30
    ServerAliveInterval 15
    ServerAliveCountMax 4
    HostKeyAlias build-box
Host off
    ServerAliveInterval 0
Host bad
    ConnectTimeout soon
Host badmax
    ServerAliveCountMax 0
`)
	_, priv, _ := ed25519.GenerateKey(nil)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writeConfig(t, home, "id", string(pem.EncodeToMemory(block)))
	resolve := func(opts Options, name string) (*endpoint, error) {
		t.Helper()
		h, err := New(Options{Machines: []string{"u@x"}, ConfigFile: cfg, ConnectTimeout: opts.ConnectTimeout, KeepAlive: opts.KeepAlive,
			IdentityFiles: []string{keyFile}, NoAgent: true, KnownHostsFiles: []string{filepath.Join(home, "known_hosts")}})
		if err != nil {
			t.Fatal(err)
		}
		e, _, err := h.resolve("u@"+name, 0)
		return e, err
	}
	e, err := resolve(Options{}, "slow")
	if err != nil {
		t.Fatal(err)
	}
	if e.connectTimeout != 30*time.Second || e.keepAlive != 15*time.Second || e.keepAliveMax != 4 || e.keyName != "build-box:22" || e.addr != "10.1.0.7:2200" {
		t.Fatalf("slow: timeout %v, keepalive %v × %d, key name %q, addr %s", e.connectTimeout, e.keepAlive, e.keepAliveMax, e.keyName, e.addr)
	}
	// What Options set wins over the config.
	if e, _ = resolve(Options{ConnectTimeout: time.Second, KeepAlive: 2 * time.Second}, "slow"); e.connectTimeout != time.Second || e.keepAlive != 2*time.Second || e.keepAliveMax != 3 {
		t.Fatalf("with Options: timeout %v, keepalive %v × %d", e.connectTimeout, e.keepAlive, e.keepAliveMax)
	}
	if e, _ = resolve(Options{}, "off"); e.keepAlive != time.Second || e.connectTimeout != 10*time.Second || e.keyName != "off:22" {
		t.Fatalf("off: timeout %v, keepalive %v, key name %q", e.connectTimeout, e.keepAlive, e.keyName)
	}
	for _, name := range []string{"bad", "badmax"} {
		if _, err := resolve(Options{}, name); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}

	// The host key is checked and recorded under the alias, as OpenSSH
	// does.
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	key := signer.PublicKey()
	known := filepath.Join(home, "known_hosts")
	tr, err := newTrust([]string{known}, true, "tofu")
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.check("u@10.1.0.7:2200", "build-box:22")("10.1.0.7:2200", &net.TCPAddr{}, key); err != nil {
		t.Fatalf("first use: %v", err)
	}
	b, _ := os.ReadFile(known)
	if !strings.HasPrefix(string(b), "build-box ") {
		t.Fatalf("known_hosts = %q, want the key under build-box", b)
	}
	strict, err := newTrust([]string{known}, false, "tofu")
	if err != nil {
		t.Fatal(err)
	}
	if err := strict.check("u@10.1.0.9:22", "build-box:22")("10.1.0.9:22", &net.TCPAddr{}, key); err != nil {
		t.Fatalf("another address under the same alias: %v", err)
	}
	if err := strict.check("u@10.1.0.7:2200", "10.1.0.7:2200")("10.1.0.7:2200", &net.TCPAddr{}, key); !errors.Is(err, driver.ErrHostKey) {
		t.Fatalf("without the alias: %v, want ErrHostKey (the key is known under the alias only)", err)
	}
}

func TestSSHConfigMatchBlocks(t *testing.T) {
	home := t.TempDir()
	cfg := writeConfig(t, home, "config", `
Host web-*
    HostName 10.0.0.5
Match host 10.0.0.* user deploy
    IdentityFile ~/.ssh/deploy_key
Match originalhost web-*,!web-old
    Port 2201
Match !localuser nobody-at-all final
    ServerAliveInterval 7
Match exec "true"
    User never
Match canonical
    User never-either
Match host 10.0.0.5 !user deploy
    User ops
`)
	c, err := loadSSHConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host, user string
		want       hostConfig
	}{
		{"web-1", "deploy", hostConfig{HostName: "10.0.0.5", IdentityFiles: []string{"~/.ssh/deploy_key"}, Port: "2201", ServerAliveInterval: "7"}},
		{"web-old", "deploy", hostConfig{HostName: "10.0.0.5", IdentityFiles: []string{"~/.ssh/deploy_key"}, ServerAliveInterval: "7"}},
		{"web-1", "", hostConfig{HostName: "10.0.0.5", Port: "2201", ServerAliveInterval: "7", User: "ops"}},
		{"db", "deploy", hostConfig{ServerAliveInterval: "7"}},
	} {
		if got := c.lookup(tc.host, tc.user); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("lookup(%q, %q) =\n %+v, want\n %+v", tc.host, tc.user, got, tc.want)
		}
	}
	for _, bad := range []string{"Match\n", "Match host\n"} {
		if _, err := loadSSHConfig(writeConfig(t, home, "bad", bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
