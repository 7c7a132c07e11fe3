package sysres

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Kinds of Limiter, as returned by Limiter.Kind and accepted by
// LimiterOptions.Force.
const (
	KindCgroup2  = "cgroup2"
	KindCgroup1  = "cgroup1"
	KindWatchdog = "watchdog"
)

const (
	defaultWatchInterval = 50 * time.Millisecond
	// closeTimeout bounds how long closing a group waits for its killed
	// processes to disappear.
	closeTimeout = 2 * time.Second
	// closePoll is the polling interval while closing a group.
	closePoll = 5 * time.Millisecond
)

// ErrUnavailable is returned, wrapped, by NewLimiter when the requested kind
// of Limiter cannot be used on this machine.
var ErrUnavailable = errors.New("sysres: limiter unavailable")

// errClosed is returned, wrapped, when a closed Limiter or Group is used.
var errClosed = errors.New("closed")

// Limiter creates per-worker memory groups. Implementations use cgroup v2,
// cgroup v1, or an RSS watchdog as a fallback. A Limiter is safe for
// concurrent use.
type Limiter interface {
	// Kind returns KindCgroup2, KindCgroup1 or KindWatchdog.
	Kind() string
	// NewGroup creates a group with the given memory limit in bytes; 0
	// means no limit, but the group's memory use is still measured. name
	// must be unique among the Limiter's open groups, non-empty, and must
	// not contain "/" or be "." or "..".
	NewGroup(name string, limitBytes int64) (Group, error)
	// Close closes every group that is still open, killing its processes,
	// and removes the parent group. It is idempotent.
	Close() error
}

// Group is one worker's memory group. A Group is safe for concurrent use.
type Group interface {
	// Attach moves a started process into the group; for the watchdog, it
	// starts watching the process group of pid, which must therefore not be
	// the process group of this process (start workers with
	// syscall.SysProcAttr{Setpgid: true}). Call it right after cmd.Start:
	// memory allocated before Attach is not accounted to the group by
	// cgroups.
	Attach(pid int) error
	// PeakBytes is the highest memory use of the group since its creation
	// or the last ResetPeak. For cgroups this is the kernel's accounting,
	// page cache included; for the watchdog it is the highest sum of
	// resident set sizes sampled.
	PeakBytes() (int64, error)
	// ResetPeak restarts peak measurement from the current use, where the
	// kernel supports it. On cgroup v2 kernels older than Linux 6.12,
	// memory.peak cannot be reset and ResetPeak is a no-op returning nil.
	ResetPeak() error
	// OOMKilled reports whether the kernel OOM killer (or the watchdog)
	// killed a process of this group since its creation.
	OOMKilled() (bool, error)
	// LimitBytes returns the memory limit the group was created with; 0
	// means none.
	LimitBytes() int64
	// Close kills every process still in the group with SIGKILL, waits
	// briefly for them to die, and removes the group. It is idempotent; a
	// Close that failed may be retried.
	Close() error
}

// Enforcer is implemented by the watchdog's groups, which see a worker's
// memory only when they sample it.
type Enforcer interface {
	// Enforce checks the limit now, against the high-water mark (VmHWM)
	// of each process Attach was given, kills the group if one is over
	// it, and reports whether the group was killed for memory. A host
	// calls it before passing on what a worker wrote, so that a worker
	// that went over its limit between two samples and finished its task
	// at once is killed before its result leaves the machine.
	Enforce() bool
}

// LimiterOptions configures NewLimiter. The zero value picks the best
// Limiter for the real machine.
type LimiterOptions struct {
	// Force selects a kind of Limiter: "" picks the best available, while
	// KindCgroup2, KindCgroup1 or KindWatchdog demand that kind and make
	// NewLimiter fail with an error wrapping ErrUnavailable if it cannot be
	// used.
	Force string
	// CgroupRoot is where the cgroup file systems are mounted; "" means
	// "/sys/fs/cgroup". Tests may override it.
	CgroupRoot string
	// ProcRoot is where the proc file system is mounted; "" means "/proc".
	// It is read for this process's cgroup and mounts and, by the watchdog,
	// for the memory use of processes.
	ProcRoot string
	// WatchInterval is the watchdog's sampling interval; 0 means 50ms.
	WatchInterval time.Duration
}

// NewLimiter returns a Limiter of the kind opts.Force demands, or, when it
// demands none, the best available of:
//
//   - cgroup v2, if the unified hierarchy is mounted, the memory controller
//     is available in this process's own cgroup and can be enabled for its
//     children, and a child group can be created there;
//   - cgroup v1, if the memory hierarchy is mounted and a child group can be
//     created in this process's own memory cgroup;
//   - the watchdog.
//
// The cgroup Limiters create their parent group, named
// "meadowrun-<pid>-<random>", as a child of this process's own cgroup.
func NewLimiter(opts LimiterOptions) (Limiter, error) {
	procRoot := orDefault(opts.ProcRoot, defaultProcRoot)
	cgRoot := orDefault(opts.CgroupRoot, defaultCgroupRoot)
	interval := opts.WatchInterval
	if interval < 0 {
		return nil, fmt.Errorf("sysres: negative watch interval %v", interval)
	}
	if interval == 0 {
		interval = defaultWatchInterval
	}

	switch opts.Force {
	case KindCgroup2:
		return newCgroupLimiter(true, procRoot, cgRoot)
	case KindCgroup1:
		return newCgroupLimiter(false, procRoot, cgRoot)
	case KindWatchdog:
		return newWatchdogLimiter(procRoot, interval)
	case "":
		if l, err := newCgroupLimiter(true, procRoot, cgRoot); err == nil {
			return l, nil
		}
		if l, err := newCgroupLimiter(false, procRoot, cgRoot); err == nil {
			return l, nil
		}
		return newWatchdogLimiter(procRoot, interval)
	default:
		return nil, fmt.Errorf("sysres: unknown limiter kind %q", opts.Force)
	}
}

// checkGroupName validates a group name given to NewGroup.
func checkGroupName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("sysres: invalid group name %q", name)
	}
	return nil
}

// checkAttachPID rejects pids that Attach must never act on.
func checkAttachPID(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("sysres: invalid pid %d", pid)
	}
	if pid == os.Getpid() {
		return fmt.Errorf("sysres: refusing to attach this process (pid %d) to a group", pid)
	}
	return nil
}

// parentGroupName returns a name for a Limiter's parent group that is unique
// across processes and across Limiters of one process.
func parentGroupName() string {
	var b [4]byte
	rand.Read(b[:]) // never fails since Go 1.24
	return fmt.Sprintf("meadowrun-%d-%s", os.Getpid(), hex.EncodeToString(b[:]))
}

// checkNewGroup validates a NewGroup call, made under the limiter's lock:
// closed says whether the limiter was closed, taken whether the name is in
// use.
func checkNewGroup(name string, limitBytes int64, closed, taken bool) error {
	if err := checkGroupName(name); err != nil {
		return err
	}
	if limitBytes < 0 {
		return fmt.Errorf("sysres: group %q: negative memory limit %d", name, limitBytes)
	}
	if closed {
		return fmt.Errorf("sysres: creating group %q: limiter %w", name, errClosed)
	}
	if taken {
		return fmt.Errorf("sysres: creating group %q: %w", name, fs.ErrExist)
	}
	return nil
}
