package sshtest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	env := "SSHNET_DIR=/d\nSSHNET_ID=3\nSSHNET_USER=root\nSSHNET_KEY=/d/id_ed25519\n" +
		"SSHNET_WRONG_KEY=/d/wrong_key\nSSHNET_USER_CA=/d/user_ca\nSSHNET_KNOWN_HOSTS=/d/known_hosts\n" +
		"SSHNET_KNOWN_HOSTS_WRONG=/d/known_hosts_wrong\nSSHNET_H1=10.99.3.11\n" +
		"SSHNET_H2=10.99.3.12\nSSHNET_H3=10.99.3.13\nSSHNET_H4=10.99.3.14\n" +
		"SSHNET_H5=10.99.3.15\nSSHNET_H6=10.99.3.16\nSSHNET_UNREACHABLE=10.99.3.99\n"
	path := filepath.Join(dir, "sshnet.env")
	if err := os.WriteFile(path, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := load(path)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != 3 || n.User != "root" || n.KnownHostsWrong != "/d/known_hosts_wrong" || n.UserCA != "/d/user_ca" ||
		n.Unreachable != "10.99.3.99" || len(n.Hosts) != 6 || n.Addr("h6") != "10.99.3.16:22" {
		t.Fatalf("load = %+v", n)
	}
	if got := n.veth(t, "h4"); got != "mr3v4" {
		t.Fatalf("veth(h4) = %q", got)
	}

	if err := os.WriteFile(path, []byte("SSHNET_ID=3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := load(path); err == nil {
		t.Fatal("load accepted a file without SSHNET_DIR")
	}
}
