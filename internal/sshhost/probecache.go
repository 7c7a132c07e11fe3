package sshhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// What a machine's probe said (its agent directory, uname -s and -m, the
// words of its machine id), kept by the machine's name and the agent
// directory asked for, in this process and in the user's cache
// directory. It only names the socket a running agent would listen on:
// a stale entry costs one failed stream, then the probe as usual.

var probes sync.Map // key → []string

func agentProbeKey(name, dir string) string { return name + "\x00" + dir }

func probeFile(key string) string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(d, "meadowrun", "ssh-probe", hex.EncodeToString(sum[:12]))
}

func loadProbe(key string) []string {
	if v, ok := probes.Load(key); ok {
		return v.([]string)
	}
	f := probeFile(key)
	if f == "" {
		return nil
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) != 7 || lines[0] != key {
		return nil
	}
	probes.Store(key, lines[1:])
	return lines[1:]
}

func storeProbe(key string, lines []string) {
	probes.Store(key, lines)
	f := probeFile(key)
	if f == "" || os.MkdirAll(filepath.Dir(f), 0o700) != nil {
		return
	}
	tmp := fmt.Sprintf("%s.%d", f, os.Getpid())
	if os.WriteFile(tmp, []byte(key+"\n"+strings.Join(lines, "\n")), 0o600) == nil {
		os.Rename(tmp, f)
	}
}

// agentSocket returns the program for the probed machine and the socket
// its agent listens on.
func agentSocket(ctx context.Context, programs *agentclient.Programs, lines []string) (*agentclient.Program, string, error) {
	if len(lines) != 6 {
		return nil, "", fmt.Errorf("bad probe")
	}
	platform, err := agentclient.GoPlatform(lines[1], lines[2])
	if err != nil {
		return nil, "", err
	}
	bin, err := programs.For(ctx, platform)
	if err != nil {
		return nil, "", err
	}
	id := agentproto.MachineID(lines[3], lines[4], lines[5])
	return bin, agentproto.SocketName(lines[0], bin.SHA, id), nil
}
