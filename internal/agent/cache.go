package agent

import (
	"github.com/meadowrun-go/meadowrun/internal/agentproto"

	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The agent's caches (bin/, files/, deploy/) hold every program, file and
// working tree clients sent. Each use marks an entry (its modification
// time); entries unused for the cache TTL are removed, so that a machine
// that saw a hundred builds of a program does not keep them all.

// DefaultCacheTTL is how long unused entries stay.
const DefaultCacheTTL = 14 * 24 * time.Hour

// tempTTL is how long an unfinished upload or tree may stay: one that old
// was abandoned.
const tempTTL = time.Hour

// sweepEvery is how often a running agent sweeps.
const sweepEvery = 24 * time.Hour

// markUsed records that the cache entry at p was used now.
func markUsed(p string) {
	now := time.Now()
	os.Chtimes(p, now, now)
}

// sweepLoop sweeps the agent's directory now and every sweepEvery until
// ctx ends, reporting what it removed on standard error (the agent's log).
func (a *agent) sweepLoop(ctx context.Context, ttl time.Duration, self string) {
	for {
		markUsed(a.path(agentproto.BinDir, self))
		n, freed, err := sweep(a.dir, a.machine, ttl, time.Now())
		if n > 0 || err != nil {
			fmt.Fprintf(os.Stderr, "%s meadowrun agent: cache sweep removed %d entries unused for %s (%d bytes)", time.Now().Format(time.RFC3339), n, ttl, freed)
			if err != nil {
				fmt.Fprintf(os.Stderr, "; %v", err)
			}
			fmt.Fprintln(os.Stderr)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(sweepEvery):
		}
	}
}

// sweep removes from dir's bin/, files/ and deploy/ the entries last used
// before now-ttl, and unfinished ones older than tempTTL, except the
// programs of agents that are running, on this machine or, as far as can
// be known, on others sharing dir. It returns how many entries it removed
// and how many bytes that freed.
func sweep(dir, machine string, ttl time.Duration, now time.Time) (int, int64, error) {
	running := runningAgents(dir, machine)
	var n int
	var freed int64
	var firstErr error
	for _, kind := range []string{agentproto.BinDir, agentproto.FileDir, agentproto.DeployDir} {
		es, err := os.ReadDir(filepath.Join(dir, kind))
		if err != nil {
			continue
		}
		for _, e := range es {
			name := e.Name()
			limit := ttl
			if !validSHA(name) {
				limit = tempTTL
			}
			if kind == agentproto.BinDir && validSHA(name) && running[idOf(name)] {
				continue
			}
			info, err := e.Info()
			if err != nil || now.Sub(info.ModTime()) < limit {
				continue
			}
			p := filepath.Join(dir, kind, name)
			// Used since the listing was read: keep it.
			if info, err := os.Stat(p); err != nil || now.Sub(info.ModTime()) < limit {
				continue
			}
			size := du(p)
			if err := os.RemoveAll(p); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			n++
			freed += size
		}
	}
	return n, freed, firstErr
}

// runningAgents returns the ids (idOf) of the agents of dir that may be
// running: on machine, those whose pid file names a live process; on other
// machines sharing dir, every one with a pid file (its process cannot be
// checked from here).
func runningAgents(dir, machine string) map[string]bool {
	out := map[string]bool{}
	ms, _ := filepath.Glob(filepath.Join(dir, "agent-*.pid"))
	for _, m := range ms {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "agent-"), ".pid")
		i := strings.LastIndex(name, "-")
		if i < 0 {
			continue
		}
		id, on := name[:i], name[i+1:]
		if on != machine {
			out[id] = true
			continue
		}
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || err == syscall.EPERM {
			out[id] = true
		}
	}
	return out
}

// du is the size of the files under p.
func du(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
