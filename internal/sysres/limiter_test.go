package sysres

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const mib = 1 << 20

var allKinds = []string{KindCgroup2, KindCgroup1, KindWatchdog}

// newTestLimiter forces a Limiter of kind on the real machine, skipping the
// test where that kind is unavailable. The Limiter is closed at cleanup.
func newTestLimiter(t *testing.T, kind string) Limiter {
	t.Helper()
	l, err := NewLimiter(LimiterOptions{Force: kind, WatchInterval: 10 * time.Millisecond})
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("%s is not available here: %v", kind, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the limiter: %v", err)
		}
	})
	return l
}

func newTestGroup(t *testing.T, l Limiter, name string, limit int64) Group {
	t.Helper()
	g, err := l.NewGroup(name, limit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("closing group %q: %v", name, err)
		}
	})
	return g
}

// groupDir returns the cgroup directory of a group, or "" for the watchdog.
func groupDir(g Group) string {
	if cg, ok := g.(*cgroupGroup); ok {
		return cg.dir
	}
	return ""
}

func TestNewLimiterOnThisMachine(t *testing.T) {
	t.Run("auto selection picks the best kind that can be forced", func(t *testing.T) {
		l, err := NewLimiter(LimiterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if !slices.Contains(allKinds, l.Kind()) {
			t.Fatalf("Kind() = %q, want one of %q", l.Kind(), allKinds)
		}
		want := KindWatchdog
		for _, kind := range []string{KindCgroup2, KindCgroup1} {
			forced, err := NewLimiter(LimiterOptions{Force: kind})
			if err == nil {
				forced.Close()
				want = kind
				break
			}
		}
		if l.Kind() != want {
			t.Errorf("auto Kind() = %q, want %q", l.Kind(), want)
		}
		t.Logf("auto selected %s", l.Kind())
	})

	for _, kind := range allKinds {
		t.Run("forcing "+kind+" either succeeds or wraps ErrUnavailable", func(t *testing.T) {
			l, err := NewLimiter(LimiterOptions{Force: kind})
			if err != nil {
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("error %v does not wrap ErrUnavailable", err)
				}
				t.Logf("%s unavailable: %v", kind, err)
				return
			}
			defer l.Close()
			if l.Kind() != kind {
				t.Errorf("Kind() = %q, want %q", l.Kind(), kind)
			}
		})
	}

	t.Run("the parent group is a child of this process's own cgroup", func(t *testing.T) {
		for _, kind := range []string{KindCgroup2, KindCgroup1} {
			l, err := NewLimiter(LimiterOptions{Force: kind})
			if err != nil {
				continue
			}
			dir := l.(*cgroupLimiter).dir
			l.Close()
			view, err := loadCgroupView(defaultProcRoot, defaultCgroupRoot)
			if err != nil {
				t.Fatal(err)
			}
			var mount, cgPath string
			if kind == KindCgroup2 {
				mount = view.v2Mount()
				cgPath, _ = view.v2Path()
			} else {
				mount = view.v1Mount("memory", "memory.limit_in_bytes")
				cgPath, _ = view.v1Path("memory")
			}
			own, err := view.ownDir(mount, cgPath)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Dir(dir) != own {
				t.Errorf("%s parent group %s is not a child of own cgroup %s", kind, dir, own)
			}
			if base := filepath.Base(dir); !strings.HasPrefix(base, "meadowrun-") {
				t.Errorf("%s parent group is named %q", kind, base)
			}
			if fileExists(dir) {
				t.Errorf("%s parent group %s still exists after Close", kind, dir)
			}
		}
	})

	t.Run("an unknown kind is an error other than ErrUnavailable", func(t *testing.T) {
		_, err := NewLimiter(LimiterOptions{Force: "cgroup3"})
		if err == nil || errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("a negative watch interval is an error", func(t *testing.T) {
		if _, err := NewLimiter(LimiterOptions{WatchInterval: -time.Second}); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestNewLimiterWithFixtures(t *testing.T) {
	tests := []struct {
		name       string
		force      string
		procCgroup string
		files      map[string]string // relative to the cgroup root
	}{
		{
			name:       "cgroup2 is unavailable without a cgroup2 mount",
			force:      KindCgroup2,
			procCgroup: "0::/\n",
		},
		{
			name:       "cgroup1 is unavailable without a memory hierarchy",
			force:      KindCgroup1,
			procCgroup: "1:cpu:/\n",
		},
		{
			name:       "cgroup2 is unavailable when the memory controller is missing",
			force:      KindCgroup2,
			procCgroup: "0::/job\n",
			files: map[string]string{
				"cgroup.controllers":         "cpu io pids\n",
				"job/cgroup.controllers":     "cpu io pids\n",
				"job/cgroup.subtree_control": "\n",
			},
		},
		{
			name:       "cgroup2 is unavailable when this process has no unified cgroup",
			force:      KindCgroup2,
			procCgroup: "4:memory:/job\n",
			files: map[string]string{
				"cgroup.controllers": "cpu io memory pids\n",
			},
		},
		{
			name:       "cgroup2 is unavailable when the new group is not a cgroup",
			force:      KindCgroup2,
			procCgroup: "0::/job\n",
			files: map[string]string{
				"unified/cgroup.controllers":         "memory\n",
				"unified/job/cgroup.controllers":     "memory\n",
				"unified/job/cgroup.subtree_control": "memory\n",
			},
		},
		{
			name:       "cgroup1 is unavailable when the new group is not a cgroup",
			force:      KindCgroup1,
			procCgroup: "4:memory:/job\n",
			files: map[string]string{
				"memory/memory.limit_in_bytes":     "9223372036854771712\n",
				"memory/job/memory.limit_in_bytes": "9223372036854771712\n",
			},
		},
		{
			name:       "cgroup1 is unavailable when this process's cgroup directory is missing",
			force:      KindCgroup1,
			procCgroup: "4:memory:/elsewhere\n",
			files: map[string]string{
				"memory/memory.limit_in_bytes": "9223372036854771712\n",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			procRoot, cgRoot := t.TempDir(), t.TempDir()
			writeFixture(t, procRoot, map[string]string{"self/cgroup": tt.procCgroup})
			writeFixture(t, cgRoot, tt.files)
			l, err := NewLimiter(LimiterOptions{Force: tt.force, ProcRoot: procRoot, CgroupRoot: cgRoot})
			if err == nil {
				l.Close()
				t.Fatalf("NewLimiter succeeded with kind %s", l.Kind())
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("error %v does not wrap ErrUnavailable", err)
			}
			leftovers, _ := filepath.Glob(filepath.Join(cgRoot, "*", "meadowrun-*"))
			more, _ := filepath.Glob(filepath.Join(cgRoot, "*", "*", "meadowrun-*"))
			if leftovers = append(leftovers, more...); len(leftovers) > 0 {
				t.Errorf("NewLimiter left %q behind", leftovers)
			}
		})
	}

	t.Run("auto selection falls back to the watchdog", func(t *testing.T) {
		procRoot := t.TempDir()
		writeFixture(t, procRoot, map[string]string{"self/cgroup": "0::/\n", "self/status": "Name:\tx\n"})
		l, err := NewLimiter(LimiterOptions{ProcRoot: procRoot, CgroupRoot: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if l.Kind() != KindWatchdog {
			t.Errorf("Kind() = %q, want %q", l.Kind(), KindWatchdog)
		}
	})
}

// writeFixture creates files below root, with their parent directories.
func writeFixture(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGroupsOnThisMachine(t *testing.T) {
	for _, kind := range allKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			newTestLimiter(t, kind) // skips the kind where it is unavailable

			t.Run("a process over its limit is SIGKILLed and reported as OOM-killed", func(t *testing.T) {
				l := newTestLimiter(t, kind)
				const limit = 100 * mib
				g := newTestGroup(t, l, "over", limit)
				c := startAllocator(t, 300, 20*time.Second)
				if err := g.Attach(c.pid()); err != nil {
					t.Fatal(err)
				}
				c.release(t)
				ws := c.wait(t)
				if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Fatalf("wait status %v, want killed by SIGKILL; stderr: %s", ws, c.stderr)
				}
				if oom, err := g.OOMKilled(); err != nil || !oom {
					t.Errorf("OOMKilled() = %v, %v; want true", oom, err)
				}
				peak, err := g.PeakBytes()
				if err != nil {
					t.Fatal(err)
				}
				if peak <= 0 {
					t.Errorf("PeakBytes() = %d, want > 0", peak)
				}
				// The kernel charges a page or two past the limit before
				// it reclaims or kills.
				if kind != KindWatchdog && peak > limit+1<<20 {
					t.Errorf("PeakBytes() = %d, over the enforced limit %d", peak, limit)
				}
				if kind == KindWatchdog && peak <= limit {
					t.Errorf("PeakBytes() = %d, but the watchdog only kills above the limit %d", peak, limit)
				}
				if g.LimitBytes() != limit {
					t.Errorf("LimitBytes() = %d, want %d", g.LimitBytes(), limit)
				}
			})

			t.Run("a process under its limit exits normally and its peak is measured", func(t *testing.T) {
				tests := []struct {
					name  string
					limit int64
				}{
					{"with a limit", 100 * mib},
					{"without a limit", 0},
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						l := newTestLimiter(t, kind)
						g := newTestGroup(t, l, "under", tt.limit)
						c := startAllocator(t, 20, 300*time.Millisecond)
						if err := g.Attach(c.pid()); err != nil {
							t.Fatal(err)
						}
						c.release(t)
						if ws := c.wait(t); !ws.Exited() || ws.ExitStatus() != 0 {
							t.Fatalf("wait status %v, want exit 0; stderr: %s", ws, c.stderr)
						}
						if oom, err := g.OOMKilled(); err != nil || oom {
							t.Errorf("OOMKilled() = %v, %v; want false", oom, err)
						}
						if peak, err := g.PeakBytes(); err != nil || peak < 20*mib {
							t.Errorf("PeakBytes() = %d, %v; want at least the 20 MiB touched", peak, err)
						}
						if g.LimitBytes() != tt.limit {
							t.Errorf("LimitBytes() = %d, want %d", g.LimitBytes(), tt.limit)
						}
					})
				}
			})

			t.Run("ResetPeak forgets the peak of a process that has exited", func(t *testing.T) {
				l := newTestLimiter(t, kind)
				g := newTestGroup(t, l, "reset", 0)
				c := startAllocator(t, 40, 300*time.Millisecond)
				if err := g.Attach(c.pid()); err != nil {
					t.Fatal(err)
				}
				c.release(t)
				c.wait(t)
				before, err := g.PeakBytes()
				if err != nil || before < 40*mib {
					t.Fatalf("PeakBytes() = %d, %v; want at least 40 MiB", before, err)
				}
				if err := g.ResetPeak(); err != nil {
					t.Fatal(err)
				}
				after, err := g.PeakBytes()
				if err != nil {
					t.Fatal(err)
				}
				resettable := kind != KindCgroup2 || g.(*cgroupGroup).peakWritable
				if resettable && after >= 40*mib {
					t.Errorf("PeakBytes() after ResetPeak = %d, want below 40 MiB", after)
				}
			})

			t.Run("closing a group kills the processes left in it and removes it", func(t *testing.T) {
				l := newTestLimiter(t, kind)
				g, err := l.NewGroup("leftover", 0)
				if err != nil {
					t.Fatal(err)
				}
				c := startCommand(t, "sleep", "100")
				if err := g.Attach(c.pid()); err != nil {
					t.Fatal(err)
				}
				if err := g.Close(); err != nil {
					t.Fatal(err)
				}
				if ws := c.wait(t); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Errorf("wait status %v, want killed by SIGKILL", ws)
				}
				if dir := groupDir(g); dir != "" && fileExists(dir) {
					t.Errorf("group directory %s still exists", dir)
				}
				if err := g.Close(); err != nil {
					t.Errorf("second Close: %v", err)
				}
				if err := g.Attach(c.pid()); err == nil {
					t.Error("Attach after Close succeeded")
				}
				if _, err := g.PeakBytes(); err != nil {
					t.Errorf("PeakBytes after Close: %v", err)
				}
				// The name is free again.
				newTestGroup(t, l, "leftover", 0)
			})

			t.Run("closing the limiter closes its groups and removes the parent group", func(t *testing.T) {
				l, err := NewLimiter(LimiterOptions{Force: kind, WatchInterval: 10 * time.Millisecond})
				if err != nil {
					t.Skip(err)
				}
				g, err := l.NewGroup("open", 0)
				if err != nil {
					t.Fatal(err)
				}
				c := startCommand(t, "sleep", "100")
				if err := g.Attach(c.pid()); err != nil {
					t.Fatal(err)
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				if ws := c.wait(t); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Errorf("wait status %v, want killed by SIGKILL", ws)
				}
				if cl, ok := l.(*cgroupLimiter); ok && fileExists(cl.dir) {
					t.Errorf("parent group %s still exists", cl.dir)
				}
				if err := l.Close(); err != nil {
					t.Errorf("second Close: %v", err)
				}
				if _, err := l.NewGroup("late", 0); err == nil {
					t.Error("NewGroup after Close succeeded")
				}
			})

			t.Run("Attach rejects processes it must not control", func(t *testing.T) {
				l := newTestLimiter(t, kind)
				g := newTestGroup(t, l, "attach", 0)
				tests := []struct {
					name string
					pid  int
				}{
					{"this process", os.Getpid()},
					{"pid zero", 0},
					{"a negative pid", -1},
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						if err := g.Attach(tt.pid); err == nil {
							t.Errorf("Attach(%d) succeeded", tt.pid)
						}
					})
				}
			})

			t.Run("NewGroup rejects invalid and duplicate names", func(t *testing.T) {
				l := newTestLimiter(t, kind)
				newTestGroup(t, l, "taken", 0)
				tests := []struct {
					name, group string
					limit       int64
				}{
					{"an empty name", "", 0},
					{"a name with a slash", "a/b", 0},
					{"the current directory", ".", 0},
					{"the parent directory", "..", 0},
					{"a name in use", "taken", 0},
					{"a negative limit", "negative", -1},
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						if g, err := l.NewGroup(tt.group, tt.limit); err == nil {
							g.Close()
							t.Errorf("NewGroup(%q, %d) succeeded", tt.group, tt.limit)
						}
					})
				}
			})
		})
	}
}

func TestWatchdog(t *testing.T) {
	t.Run("refuses a process in this process's own process group", func(t *testing.T) {
		l := newTestLimiter(t, KindWatchdog)
		g := newTestGroup(t, l, "own-pgrp", 0)
		c := startChild(t, exec.Command("sleep", "100"), false, false)
		if err := g.Attach(c.pid()); err == nil {
			t.Fatal("Attach succeeded")
		}
	})

	t.Run("the sampling goroutine stops when the process group is gone", func(t *testing.T) {
		l := newTestLimiter(t, KindWatchdog)
		g := newTestGroup(t, l, "gone", 0)
		c := startAllocator(t, 1, 50*time.Millisecond)
		if err := g.Attach(c.pid()); err != nil {
			t.Fatal(err)
		}
		done := l.(*watchdogLimiter).currentLoopDone()
		if done == nil {
			t.Fatal("no sampling goroutine after Attach")
		}
		c.release(t)
		c.wait(t)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the sampling goroutine is still running")
		}
	})

	t.Run("the sampling goroutine stops when the limiter is closed", func(t *testing.T) {
		l, err := NewLimiter(LimiterOptions{Force: KindWatchdog})
		if err != nil {
			t.Fatal(err)
		}
		g, err := l.NewGroup("closed", 0)
		if err != nil {
			t.Fatal(err)
		}
		c := startCommand(t, "sleep", "100")
		if err := g.Attach(c.pid()); err != nil {
			t.Fatal(err)
		}
		done := l.(*watchdogLimiter).currentLoopDone()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		default:
			t.Fatal("the sampling goroutine is still running after Close")
		}
	})

	t.Run("a peak between two samples is over the limit", func(t *testing.T) {
		// No sample but Attach's: only the high-water mark shows the
		// 50 MiB, freed before the allocator says ready.
		l, err := NewLimiter(LimiterOptions{Force: KindWatchdog, WatchInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		g, err := l.NewGroup("between", 30*mib)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), sysresHelperEnv+"=50", sysresHoldEnv+"=20s", sysresFreeEnv+"=1")
		c := startChild(t, cmd, true, true)
		if err := g.Attach(c.pid()); err != nil {
			t.Fatal(err)
		}
		e, ok := g.(Enforcer)
		if !ok {
			t.Fatal("a watchdog group is not an Enforcer")
		}
		if e.Enforce() {
			t.Fatal("Enforce killed the allocator before it allocated")
		}
		c.release(t)
		c.awaitReady(t)
		if rss, err := ProcessGroupRSS(c.pid()); err != nil || rss > 30*mib {
			t.Fatalf("the allocator's RSS after freeing: %d, %v; want under the limit", rss, err)
		}
		if !e.Enforce() {
			t.Fatal("Enforce did not see the 50 MiB peak over the 30 MiB limit")
		}
		c.wait(t)
		if oom, err := g.OOMKilled(); err != nil || !oom {
			t.Errorf("OOMKilled() = %v, %v; want true", oom, err)
		}
		if peak, _ := g.PeakBytes(); peak < 50*mib {
			t.Errorf("PeakBytes() = %d; want the 50 MiB high-water mark", peak)
		}
	})

	t.Run("a killed group stays reported as OOM-killed after Close", func(t *testing.T) {
		l := newTestLimiter(t, KindWatchdog)
		g, err := l.NewGroup("final", 10*mib)
		if err != nil {
			t.Fatal(err)
		}
		c := startAllocator(t, 50, 20*time.Second)
		if err := g.Attach(c.pid()); err != nil {
			t.Fatal(err)
		}
		// The watchdog may kill it before it is released (a race-enabled
		// child can be over 10 MiB as it starts): the kill is what counts.
		if _, err := c.stdin.Write([]byte{'g'}); err != nil && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("releasing the allocator: %v", err)
		}
		c.wait(t)
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
		if oom, err := g.OOMKilled(); err != nil || !oom {
			t.Errorf("OOMKilled() after Close = %v, %v; want true", oom, err)
		}
	})
}

// currentLoopDone returns the channel closed when the latest sampling
// goroutine exits, or nil if none was started.
func (l *watchdogLimiter) currentLoopDone() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loopDone
}
