package sysres

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cgroupLimiter is the Limiter for cgroup v1 and v2. Its groups are
// directories below one parent group, which is a child of this process's
// own cgroup.
type cgroupLimiter struct {
	v2  bool
	dir string // the parent group

	mu      sync.Mutex
	closed  bool // no new groups
	removed bool // the parent group is gone
	groups  map[string]*cgroupGroup
}

// newCgroupLimiter creates the parent group of a cgroup Limiter. Any failure
// means the kind is unavailable.
func newCgroupLimiter(v2 bool, procRoot, cgRoot string) (Limiter, error) {
	kind := KindCgroup1
	if v2 {
		kind = KindCgroup2
	}
	dir, err := createCgroupParent(v2, procRoot, cgRoot)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, kind, err)
	}
	return &cgroupLimiter{v2: v2, dir: dir, groups: map[string]*cgroupGroup{}}, nil
}

// createCgroupParent checks that the hierarchy is usable and creates the
// parent group in this process's own cgroup.
func createCgroupParent(v2 bool, procRoot, cgRoot string) (string, error) {
	view, err := loadCgroupView(procRoot, cgRoot)
	if err != nil {
		return "", err
	}
	var (
		mount, cgPath string
		ok            bool
		marker        string // a file the memory controller creates in every group
	)
	if v2 {
		if mount = view.v2Mount(); mount == "" {
			return "", fmt.Errorf("no cgroup2 file system at %s", cgRoot)
		}
		if cgPath, ok = view.v2Path(); !ok {
			return "", errors.New("this process has no cgroup in the unified hierarchy")
		}
		marker = "memory.max"
	} else {
		if mount = view.v1Mount("memory", "memory.limit_in_bytes"); mount == "" {
			return "", fmt.Errorf("no cgroup v1 memory hierarchy at %s", cgRoot)
		}
		if cgPath, ok = view.v1Path("memory"); !ok {
			return "", errors.New("this process has no cgroup in the memory hierarchy")
		}
		marker = "memory.limit_in_bytes"
	}
	own, err := view.ownDir(mount, cgPath)
	if err != nil {
		return "", err
	}

	if v2 {
		// Children of own get the memory controller only if own has it
		// and enables it in its subtree_control. Enabling fails (EBUSY)
		// if own is a non-root cgroup that holds processes, as this one
		// does, unless someone already enabled it.
		controllers, err := readString(filepath.Join(own, "cgroup.controllers"))
		if err != nil {
			return "", err
		}
		if !slices.Contains(strings.Fields(controllers), "memory") {
			return "", fmt.Errorf("memory controller not available in %s", own)
		}
		subtree, err := readString(filepath.Join(own, "cgroup.subtree_control"))
		if err != nil {
			return "", err
		}
		if !slices.Contains(strings.Fields(subtree), "memory") {
			if err := writeFile(filepath.Join(own, "cgroup.subtree_control"), "+memory"); err != nil {
				return "", fmt.Errorf("enabling the memory controller below %s: %w", own, err)
			}
		}
	}

	sweepStale(own, v2)
	dir := filepath.Join(own, parentGroupName())
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if !fileExists(filepath.Join(dir, marker)) {
		os.Remove(dir)
		return "", fmt.Errorf("%s is not a memory cgroup: it has no %s", dir, marker)
	}
	if v2 {
		// The parent holds no processes, so this is always allowed.
		if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+memory"); err != nil {
			os.Remove(dir)
			return "", fmt.Errorf("enabling the memory controller below %s: %w", dir, err)
		}
	}
	return dir, nil
}

// Kind implements Limiter.
func (l *cgroupLimiter) Kind() string {
	if l.v2 {
		return KindCgroup2
	}
	return KindCgroup1
}

// NewGroup implements Limiter.
func (l *cgroupLimiter) NewGroup(name string, limitBytes int64) (Group, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, taken := l.groups[name]
	if err := checkNewGroup(name, limitBytes, l.closed, taken); err != nil {
		return nil, err
	}
	g := &cgroupGroup{l: l, name: name, dir: filepath.Join(l.dir, name), limit: limitBytes, v2: l.v2}
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		return nil, fmt.Errorf("sysres: creating group %q: %w", name, err)
	}
	if err := g.configure(); err != nil {
		g.closePeakFile()
		os.Remove(g.dir)
		return nil, fmt.Errorf("sysres: configuring group %q: %w", name, err)
	}
	l.groups[name] = g
	return g, nil
}

// forget removes a closed group from the Limiter.
func (l *cgroupLimiter) forget(g *cgroupGroup) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.groups[g.name] == g {
		delete(l.groups, g.name)
	}
}

// Close implements Limiter.
func (l *cgroupLimiter) Close() error {
	l.mu.Lock()
	if l.removed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	groups := make([]*cgroupGroup, 0, len(l.groups))
	for _, g := range l.groups {
		groups = append(groups, g)
	}
	l.mu.Unlock()

	var errs []error
	for _, g := range groups {
		errs = append(errs, g.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := removeCgroupDir(l.dir); err != nil {
		return fmt.Errorf("sysres: removing parent group: %w", err)
	}
	l.mu.Lock()
	l.removed = true
	l.mu.Unlock()
	return nil
}

// cgroupGroup is a Group backed by a cgroup directory. On cgroup v2 without
// memory.peak (Linux before 5.19), PeakBytes reports memory.current instead.
// Cgroup v1 has no equivalent of memory.oom.group: its OOM killer may kill
// only the largest process of a group.
type cgroupGroup struct {
	l     *cgroupLimiter
	name  string
	dir   string
	limit int64
	v2    bool

	mu            sync.Mutex
	closed        bool
	peakFile      *os.File // v2 memory.peak, kept open: resets apply per open file
	peakWritable  bool
	finalPeak     int64 // PeakBytes as observed by Close
	finalOOMKill  bool  // OOMKilled as observed by Close
	finalObserved error // why finalPeak/finalOOMKill are unknown, if they are
}

// configure applies the limit to a new group directory.
func (g *cgroupGroup) configure() error {
	if !g.v2 {
		if g.limit == 0 {
			return nil
		}
		limit := strconv.FormatInt(g.limit, 10)
		if err := writeFile(filepath.Join(g.dir, "memory.limit_in_bytes"), limit); err != nil {
			return err
		}
		// With swap accounting, also forbid swapping beyond the limit, so
		// that exceeding it means being OOM-killed, as with cgroup v2.
		// memsw must be at least limit_in_bytes, hence the order.
		if memsw := filepath.Join(g.dir, "memory.memsw.limit_in_bytes"); fileExists(memsw) {
			if err := writeFile(memsw, limit); err != nil {
				return err
			}
		}
		return nil
	}

	if g.limit > 0 {
		if err := writeFile(filepath.Join(g.dir, "memory.max"), strconv.FormatInt(g.limit, 10)); err != nil {
			return err
		}
		if swap := filepath.Join(g.dir, "memory.swap.max"); fileExists(swap) {
			if err := writeFile(swap, "0"); err != nil {
				return err
			}
		}
	}
	// A worker is a unit: when the OOM killer picks one of its processes,
	// kill all of them rather than leave a crippled worker behind.
	if oomGroup := filepath.Join(g.dir, "memory.oom.group"); fileExists(oomGroup) {
		if err := writeFile(oomGroup, "1"); err != nil {
			return err
		}
	}
	peak := filepath.Join(g.dir, "memory.peak")
	f, err := os.OpenFile(peak, os.O_RDWR, 0)
	if err == nil {
		g.peakFile, g.peakWritable = f, true
		return nil
	}
	// Before Linux 6.12 memory.peak is read-only; before 5.19 it is absent.
	if f, err = os.Open(peak); err == nil {
		g.peakFile = f
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (g *cgroupGroup) closePeakFile() {
	if g.peakFile != nil {
		g.peakFile.Close()
		g.peakFile = nil
	}
}

// Attach implements Group.
func (g *cgroupGroup) Attach(pid int) error {
	if err := checkAttachPID(pid); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fmt.Errorf("sysres: attaching pid %d: group %q %w", pid, g.name, errClosed)
	}
	if err := writeFile(filepath.Join(g.dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("sysres: attaching pid %d to group %q: %w", pid, g.name, err)
	}
	return nil
}

// PeakBytes implements Group. After Close it reports the value observed
// when the group was closed.
func (g *cgroupGroup) PeakBytes() (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		if g.finalObserved != nil {
			return 0, fmt.Errorf("sysres: group %q: %w", g.name, g.finalObserved)
		}
		return g.finalPeak, nil
	}
	n, err := g.peak()
	if err != nil {
		return 0, fmt.Errorf("sysres: group %q: peak memory: %w", g.name, err)
	}
	return n, nil
}

func (g *cgroupGroup) peak() (int64, error) {
	if !g.v2 {
		return readInt64(filepath.Join(g.dir, "memory.max_usage_in_bytes"))
	}
	if g.peakFile == nil {
		return readInt64(filepath.Join(g.dir, "memory.current"))
	}
	var buf [32]byte
	n, err := g.peakFile.ReadAt(buf[:], 0)
	if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(buf[:n])), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing memory.peak: %w", err)
	}
	return v, nil
}

// ResetPeak implements Group.
func (g *cgroupGroup) ResetPeak() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fmt.Errorf("sysres: resetting peak: group %q %w", g.name, errClosed)
	}
	if !g.v2 {
		if err := writeFile(filepath.Join(g.dir, "memory.max_usage_in_bytes"), "0"); err != nil {
			return fmt.Errorf("sysres: group %q: resetting peak: %w", g.name, err)
		}
		return nil
	}
	if g.peakFile == nil || !g.peakWritable {
		return nil // documented no-op: the kernel cannot reset memory.peak
	}
	// Since Linux 6.12, writing to memory.peak resets the peak as seen
	// through this open file to the current usage.
	if _, err := g.peakFile.Write([]byte("reset\n")); err != nil {
		if isNotSupported(err) {
			g.peakWritable = false
			return nil
		}
		return fmt.Errorf("sysres: group %q: resetting peak: %w", g.name, err)
	}
	return nil
}

// OOMKilled implements Group. After Close it reports the value observed
// when the group was closed.
func (g *cgroupGroup) OOMKilled() (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		if g.finalObserved != nil {
			return false, fmt.Errorf("sysres: group %q: %w", g.name, g.finalObserved)
		}
		return g.finalOOMKill, nil
	}
	killed, err := g.oomKilled()
	if err != nil {
		return false, fmt.Errorf("sysres: group %q: OOM kills: %w", g.name, err)
	}
	return killed, nil
}

func (g *cgroupGroup) oomKilled() (bool, error) {
	if g.v2 {
		data, err := os.ReadFile(filepath.Join(g.dir, "memory.events"))
		if err != nil {
			return false, err
		}
		n, _, err := parseKeyedValue(data, "oom_kill")
		return n > 0, err
	}
	data, err := os.ReadFile(filepath.Join(g.dir, "memory.oom_control"))
	if err != nil {
		return false, err
	}
	n, found, err := parseKeyedValue(data, "oom_kill")
	if err != nil || found {
		return n > 0, err
	}
	// Kernels before 4.13 have no oom_kill counter. Guess from the
	// failure count: the limit was hit and usage reached it.
	if g.limit == 0 {
		return false, nil
	}
	failcnt, err := readInt64(filepath.Join(g.dir, "memory.failcnt"))
	if err != nil || failcnt == 0 {
		return false, err
	}
	maxUsage, err := readInt64(filepath.Join(g.dir, "memory.max_usage_in_bytes"))
	if err != nil {
		return false, err
	}
	return maxUsage >= g.limit-g.limit/20, nil
}

// LimitBytes implements Group.
func (g *cgroupGroup) LimitBytes() int64 { return g.limit }

// Close implements Group.
func (g *cgroupGroup) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	peak, err1 := g.peak()
	oom, err2 := g.oomKilled()
	if err := destroyCgroup(g.dir, g.v2); err != nil {
		return fmt.Errorf("sysres: closing group %q: %w", g.name, err)
	}
	g.closePeakFile()
	g.closed = true
	g.finalPeak, g.finalOOMKill, g.finalObserved = peak, oom, errors.Join(err1, err2)
	g.l.forget(g)
	return nil
}

// destroyCgroup kills every process in the cgroup at dir, waits for them to
// leave it, and removes it. A cgroup that is already gone is not an error.
func destroyCgroup(dir string, v2 bool) error {
	if v2 {
		// cgroup.kill (Linux 5.14+) kills atomically, forks included.
		if err := writeFile(filepath.Join(dir, "cgroup.kill"), "1"); err != nil && !isNotSupported(err) {
			return err
		}
	}
	deadline := time.Now().Add(closeTimeout)
	for {
		pids, err := readPids(filepath.Join(dir, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		// Kill in every round: a process may have forked meanwhile.
		for _, pid := range pids {
			if pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if len(pids) == 0 {
			return removeCgroupDir(dir)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes still in %s %v after SIGKILL", len(pids), dir, closeTimeout)
		}
		time.Sleep(closePoll)
	}
}

// removeCgroupDir removes an empty cgroup, retrying briefly while the kernel
// still considers it busy.
func removeCgroupDir(dir string) error {
	deadline := time.Now().Add(closeTimeout)
	for {
		err := syscall.Rmdir(dir)
		switch {
		case err == nil || errors.Is(err, syscall.ENOENT):
			return nil
		case errors.Is(err, syscall.EBUSY) && time.Now().Before(deadline):
			time.Sleep(closePoll)
		default:
			return &fs.PathError{Op: "rmdir", Path: dir, Err: err}
		}
	}
}

// sweepStale removes the groups left by meadowrun processes that died
// without closing their limiter (SIGKILL, a crash), killing any worker of
// theirs still inside. A group belongs to a dead process when the pid in
// its name "meadowrun-<pid>-<random>" no longer exists.
func sweepStale(own string, v2 bool) {
	entries, err := os.ReadDir(own)
	if err != nil {
		return
	}
	for _, e := range entries {
		var pid int
		var suffix string
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "meadowrun-") {
			continue
		}
		if n, _ := fmt.Sscanf(e.Name(), "meadowrun-%d-%s", &pid, &suffix); n != 2 || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue
		}
		parent := filepath.Join(own, e.Name())
		children, _ := os.ReadDir(parent)
		for _, c := range children {
			if c.IsDir() {
				child := filepath.Join(parent, c.Name())
				destroyCgroup(child, v2)
				removeCgroupDir(child)
			}
		}
		removeCgroupDir(parent)
	}
}
