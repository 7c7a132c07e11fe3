package sysres

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// watchdogLimiter is the Limiter of last resort: one goroutine samples the
// resident set size of every watched process group from /proc and kills
// process groups over their limit. The goroutine runs only while some group
// has live processes.
type watchdogLimiter struct {
	procRoot string
	interval time.Duration
	stop     chan struct{} // closed by Close

	mu       sync.Mutex
	closed   bool
	stopped  bool // stop is closed
	groups   map[string]*watchdogGroup
	watched  map[*watchdogGroup]struct{}
	running  bool          // a sampling goroutine is running
	loopDone chan struct{} // closed when the latest sampling goroutine exits
}

func newWatchdogLimiter(procRoot string, interval time.Duration) (Limiter, error) {
	if _, err := os.Stat(filepath.Join(procRoot, "self", "status")); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, KindWatchdog, err)
	}
	return &watchdogLimiter{
		procRoot: procRoot,
		interval: interval,
		stop:     make(chan struct{}),
		groups:   map[string]*watchdogGroup{},
		watched:  map[*watchdogGroup]struct{}{},
	}, nil
}

// Kind implements Limiter.
func (l *watchdogLimiter) Kind() string { return KindWatchdog }

// NewGroup implements Limiter.
func (l *watchdogLimiter) NewGroup(name string, limitBytes int64) (Group, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, taken := l.groups[name]
	if err := checkNewGroup(name, limitBytes, l.closed, taken); err != nil {
		return nil, err
	}
	g := &watchdogGroup{l: l, name: name, limit: limitBytes}
	l.groups[name] = g
	return g, nil
}

// Close implements Limiter.
func (l *watchdogLimiter) Close() error {
	l.mu.Lock()
	l.closed = true
	groups := slices.Collect(maps.Values(l.groups))
	l.mu.Unlock()

	var errs []error
	for _, g := range groups {
		errs = append(errs, g.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	l.mu.Lock()
	if !l.stopped {
		l.stopped = true
		close(l.stop)
	}
	done := l.loopDone
	l.mu.Unlock()
	if done != nil {
		<-done
	}
	return nil
}

// watch makes the sampling goroutine watch g, starting it if needed.
func (l *watchdogLimiter) watch(g *watchdogGroup) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("limiter %w", errClosed)
	}
	l.watched[g] = struct{}{}
	if !l.running {
		l.running = true
		l.loopDone = make(chan struct{})
		go l.loop(l.loopDone)
	}
	return nil
}

// unwatch stops watching g if it is still gone, or unconditionally if
// force is set. Attach may have revived g since the sample that found it
// gone.
func (l *watchdogLimiter) unwatch(g *watchdogGroup, force bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if force || g.gone {
		delete(l.watched, g)
	}
}

// forget removes a closed group from the Limiter.
func (l *watchdogLimiter) forget(g *watchdogGroup) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.groups[g.name] == g {
		delete(l.groups, g.name)
	}
}

// loop samples the watched groups every interval until Close, or until no
// group is left to watch.
func (l *watchdogLimiter) loop(done chan struct{}) {
	defer close(done)
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			l.mu.Lock()
			l.running = false
			l.mu.Unlock()
			return
		case <-t.C:
		}

		l.mu.Lock()
		if len(l.watched) == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		groups := slices.Collect(maps.Keys(l.watched))
		l.mu.Unlock()

		want := map[int]bool{}
		for _, g := range groups {
			for _, pgid := range g.pgidList() {
				want[pgid] = true
			}
		}
		usage, err := scanProcessGroups(l.procRoot, want)
		if err != nil {
			continue // such as EMFILE; try again at the next tick
		}
		for _, g := range groups {
			if g.observe(usage) {
				l.unwatch(g, false)
			}
		}
	}
}

// watchdogGroup is a Group enforced by sampling. OOMKilled only reports the
// watchdog's own kills: without a cgroup, a kill by the kernel OOM killer
// cannot be attributed to a group.
type watchdogGroup struct {
	l     *watchdogLimiter
	name  string
	limit int64

	mu        sync.Mutex
	pgids     []int
	peak      int64
	oomKilled bool
	gone      bool // no attached process group has live processes
	closing   bool // Close has begun: Attach is refused
	closed    bool
}

func (g *watchdogGroup) pgidList() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.pgids)
}

// observe records a sample and kills the group if it is over its limit. It
// reports whether the group has no live process left.
func (g *watchdogGroup) observe(usage map[int]groupUsage) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.gone = true
		return true
	}
	var rss int64
	live := 0
	for _, pgid := range g.pgids {
		rss += usage[pgid].rss
		live += usage[pgid].live
	}
	if live == 0 {
		g.gone = true
		return true
	}
	// A process's own high-water mark is a peak of the group's sum too
	// (never above it): a worker that allocated and freed between two
	// samples is seen over its limit at the next one.
	hwm := int64(0)
	for _, pgid := range g.pgids {
		hwm = max(hwm, usage[pgid].hwm)
	}
	g.peak = max(g.peak, rss) // not hwm: ResetPeak could not reset it
	if g.limit > 0 && (rss > g.limit || hwm > g.limit) {
		g.peak = max(g.peak, hwm)
		g.oomKilled = true
		// Only signal process groups seen alive in this sample, so that a
		// process group ID reused since cannot be hit.
		for _, pgid := range g.pgids {
			if usage[pgid].live > 0 {
				syscall.Kill(-pgid, syscall.SIGKILL)
			}
		}
	}
	return false
}

// Attach implements Group. The process group of pid, rather than pid alone,
// is watched and killed.
func (g *watchdogGroup) Attach(pid int) error {
	if err := checkAttachPID(pid); err != nil {
		return err
	}
	pgid, err := syscall.Getpgid(pid)
	if err != nil {
		return fmt.Errorf("sysres: attaching pid %d: %w", pid, err)
	}
	if pgid == syscall.Getpgrp() {
		return fmt.Errorf("sysres: attaching pid %d: it is in this process's process group %d; start it with SysProcAttr.Setpgid", pid, pgid)
	}

	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return fmt.Errorf("sysres: attaching pid %d: group %q %w", pid, g.name, errClosed)
	}
	if !slices.Contains(g.pgids, pgid) {
		g.pgids = append(g.pgids, pgid)
	}
	g.gone = false
	want := map[int]bool{}
	for _, p := range g.pgids {
		want[p] = true
	}
	g.mu.Unlock()

	// Sample right away, so that even a process that lives shorter than
	// one interval is measured.
	if usage, err := scanProcessGroups(g.l.procRoot, want); err == nil {
		g.observe(usage)
	}
	if err := g.l.watch(g); err != nil {
		return fmt.Errorf("sysres: attaching pid %d to group %q: %w", pid, g.name, err)
	}
	return nil
}

// Enforce implements Enforcer: the high-water marks of the group's
// process group leaders (the processes Attach was given), read now.
func (g *watchdogGroup) Enforce() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.oomKilled || g.closed || g.limit <= 0 {
		return g.oomKilled
	}
	for _, pgid := range g.pgids {
		status, err := os.ReadFile(filepath.Join(g.l.procRoot, strconv.Itoa(pgid), "status"))
		if err != nil {
			continue // it exited: the samples saw it
		}
		hwm, err := parseMeminfoKB(status, "VmHWM")
		if err != nil || hwm*1024 <= g.limit {
			continue
		}
		g.peak = max(g.peak, hwm*1024)
		g.oomKilled = true
		for _, p := range g.pgids {
			syscall.Kill(-p, syscall.SIGKILL)
		}
		break
	}
	return g.oomKilled
}

// PeakBytes implements Group.
func (g *watchdogGroup) PeakBytes() (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak, nil
}

// ResetPeak implements Group. The peak restarts at the next sample.
func (g *watchdogGroup) ResetPeak() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fmt.Errorf("sysres: resetting peak: group %q %w", g.name, errClosed)
	}
	g.peak = 0
	return nil
}

// OOMKilled implements Group.
func (g *watchdogGroup) OOMKilled() (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.oomKilled, nil
}

// LimitBytes implements Group.
func (g *watchdogGroup) LimitBytes() int64 { return g.limit }

// Close implements Group: it kills the attached process groups and waits
// for their processes to die (zombies count as dead).
func (g *watchdogGroup) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closing = true
	want := map[int]bool{}
	for _, p := range g.pgids {
		want[p] = true
	}
	g.mu.Unlock()

	if len(want) > 0 {
		if err := killProcessGroups(g.l.procRoot, want); err != nil {
			return fmt.Errorf("sysres: closing group %q: %w", g.name, err)
		}
	}
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.l.unwatch(g, true)
	g.l.forget(g)
	return nil
}

// killProcessGroups SIGKILLs the process groups in want that still have
// live processes until none has, for at most closeTimeout.
func killProcessGroups(procRoot string, want map[int]bool) error {
	deadline := time.Now().Add(closeTimeout)
	for {
		usage, err := scanProcessGroups(procRoot, want)
		if err != nil {
			return err
		}
		if len(usage) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process groups %v still alive %v after SIGKILL", slices.Sorted(maps.Keys(usage)), closeTimeout)
		}
		for pgid := range usage {
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
		time.Sleep(closePoll)
	}
}
