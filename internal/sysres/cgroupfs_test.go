package sysres

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []cgroupEntry
		wantErr bool
	}{
		{
			name: "a hybrid v1 and v2 listing is parsed line by line",
			in:   "4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n",
			want: []cgroupEntry{
				{id: 4, controllers: []string{"memory"}, path: "/process_api/abc"},
				{id: 1, controllers: []string{"cpu", "cpuacct"}, path: "/"},
				{id: 0, path: "/"},
			},
		},
		{
			name: "a named hierarchy keeps its name= controller",
			in:   "9:name=systemd:/user.slice\n",
			want: []cgroupEntry{{id: 9, controllers: []string{"name=systemd"}, path: "/user.slice"}},
		},
		{
			name: "a path containing a colon is kept whole",
			in:   "0::/a:b\n",
			want: []cgroupEntry{{id: 0, path: "/a:b"}},
		},
		{name: "a line without colons is an error", in: "garbage\n", wantErr: true},
		{name: "a non-numeric hierarchy id is an error", in: "x::/\n", wantErr: true},
		{name: "a relative path is an error", in: "0::a\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcCgroup([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseMountInfo(t *testing.T) {
	in := "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime shared:1 - cgroup cgroup rw,memory\n" +
		"40 30 0:37 /docker/abc /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n" +
		"50 22 8:1 / /mnt/with\\040space rw - ext4 /dev/sda1 rw\n" +
		"truncated line\n"
	want := []mountInfo{
		{root: "/", mountPoint: "/sys/fs/cgroup/memory", fsType: "cgroup"},
		{root: "/docker/abc", mountPoint: "/sys/fs/cgroup/unified", fsType: "cgroup2"},
		{root: "/", mountPoint: "/mnt/with space", fsType: "ext4"},
	}
	if got := parseMountInfo([]byte(in)); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestOwnDir(t *testing.T) {
	root := t.TempDir()
	mount := filepath.Join(root, "memory")
	for _, d := range []string{"memory/jobs/a", "memory/sub"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		mounts  []mountInfo
		cgPath  string
		want    string
		wantErr bool
	}{
		{
			name:   "a path is joined to the mount point",
			cgPath: "/jobs/a",
			want:   filepath.Join(mount, "jobs/a"),
		},
		{
			name:   "the root cgroup is the mount point",
			cgPath: "/",
			want:   mount,
		},
		{
			name:   "the mount root is stripped from the path",
			mounts: []mountInfo{{root: "/docker/abc", mountPoint: mount, fsType: "cgroup"}},
			cgPath: "/docker/abc/sub",
			want:   filepath.Join(mount, "sub"),
		},
		{
			name:   "a path equal to the mount root is the mount point",
			mounts: []mountInfo{{root: "/docker/abc", mountPoint: mount, fsType: "cgroup"}},
			cgPath: "/docker/abc",
			want:   mount,
		},
		{
			name:   "mounts of other file systems are ignored",
			mounts: []mountInfo{{root: "/jobs", mountPoint: mount, fsType: "ext4"}},
			cgPath: "/jobs/a",
			want:   filepath.Join(mount, "jobs/a"),
		},
		{
			name:    "a path escaping the mount is an error",
			cgPath:  "/../..",
			wantErr: true,
		},
		{
			name:    "a missing directory is an error, not the hierarchy root",
			cgPath:  "/elsewhere",
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := cgroupView{mounts: tt.mounts, cgRoot: root}
			got, err := v.ownDir(mount, tt.cgPath)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAncestry(t *testing.T) {
	tests := []struct {
		name       string
		mount, dir string
		want       []string
	}{
		{"a nested cgroup lists every ancestor up to the mount", "/cg/memory", "/cg/memory/a/b", []string{"/cg/memory/a/b", "/cg/memory/a", "/cg/memory"}},
		{"the mount itself lists only itself", "/cg/memory", "/cg/memory", []string{"/cg/memory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ancestry(tt.mount, tt.dir); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseKeyedValue(t *testing.T) {
	events := "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"
	tests := []struct {
		name      string
		in, key   string
		want      int64
		wantFound bool
		wantErr   bool
	}{
		{"oom_kill is found in memory.events", events, "oom_kill", 1, true, false},
		{"a key that is a prefix of another is matched exactly", events, "oom", 1, true, false},
		{"a missing key is not found", events, "oom_kill_disable", 0, false, false},
		{"a v1 oom_control is parsed", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill", 3, true, false},
		{"a malformed value is an error", "oom_kill lots\n", "oom_kill", 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found, err := parseKeyedValue([]byte(tt.in), tt.key)
			if (err != nil) != tt.wantErr || got != tt.want || found != tt.wantFound {
				t.Errorf("got %d, %v, %v; want %d, %v, err %v", got, found, err, tt.want, tt.wantFound, tt.wantErr)
			}
		})
	}
}

func TestParseMax(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"max means unlimited", "max\n", -1, false},
		{"a number is bytes", "1073741824\n", 1 << 30, false},
		{"garbage is an error", "lots", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMax(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseMax(%q) = %d, %v", tt.in, got, err)
			}
		})
	}
}

// TestCgroupGroupInterfaceFiles reads groups built from fixture
// directories, standing in for kernels this machine does not run.
func TestCgroupGroupInterfaceFiles(t *testing.T) {
	tests := []struct {
		name     string
		v2       bool
		limit    int64
		files    map[string]string
		openPeak bool
		wantPeak int64
		wantOOM  bool
	}{
		{
			name:     "cgroup v2 reads the peak from memory.peak and OOM kills from memory.events",
			v2:       true,
			limit:    100 * mib,
			files:    map[string]string{"memory.peak": "104857600\n", "memory.current": "4096\n", "memory.events": "low 0\nhigh 0\nmax 40\noom 2\noom_kill 1\noom_group_kill 1\n"},
			openPeak: true,
			wantPeak: 104857600,
			wantOOM:  true,
		},
		{
			name:     "cgroup v2 without memory.peak falls back to memory.current",
			v2:       true,
			files:    map[string]string{"memory.current": "8192\n", "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"},
			wantPeak: 8192,
		},
		{
			name:     "cgroup v1 reads oom_kill from memory.oom_control",
			limit:    100 * mib,
			files:    map[string]string{"memory.max_usage_in_bytes": "104857600\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "memory.failcnt": "0\n"},
			wantPeak: 104857600,
			wantOOM:  true,
		},
		{
			name:     "cgroup v1 without oom_kill guesses from failcnt and usage at the limit",
			limit:    100 * mib,
			files:    map[string]string{"memory.max_usage_in_bytes": "104800000\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n", "memory.failcnt": "7\n"},
			wantPeak: 104800000,
			wantOOM:  true,
		},
		{
			name:     "cgroup v1 without oom_kill and far below the limit was not OOM-killed",
			limit:    100 * mib,
			files:    map[string]string{"memory.max_usage_in_bytes": "1048576\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n", "memory.failcnt": "7\n"},
			wantPeak: 1048576,
		},
		{
			name:     "cgroup v1 with oom_kill 0 was not OOM-killed",
			files:    map[string]string{"memory.max_usage_in_bytes": "1048576\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
			wantPeak: 1048576,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFixture(t, dir, tt.files)
			g := &cgroupGroup{name: "fixture", dir: dir, limit: tt.limit, v2: tt.v2}
			if tt.openPeak {
				f, err := os.Open(filepath.Join(dir, "memory.peak"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				g.peakFile = f
			}
			peak, err := g.PeakBytes()
			if err != nil || peak != tt.wantPeak {
				t.Errorf("PeakBytes() = %d, %v; want %d", peak, err, tt.wantPeak)
			}
			// Reading twice through a kept file must give the same answer.
			if again, err := g.PeakBytes(); err != nil || again != peak {
				t.Errorf("second PeakBytes() = %d, %v; want %d", again, err, peak)
			}
			oom, err := g.OOMKilled()
			if err != nil || oom != tt.wantOOM {
				t.Errorf("OOMKilled() = %v, %v; want %v", oom, err, tt.wantOOM)
			}
		})
	}
}

func TestScanProcessGroups(t *testing.T) {
	procRoot := t.TempDir()
	writeFixture(t, procRoot, map[string]string{
		// A leader and a child in group 100, one with a command name that
		// contains ") (".
		"100/stat":   "100 (python3) S 1 100 100 0 -1 4194304 ...\n",
		"100/status": "Name:\tpython3\nVmRSS:\t    1000 kB\n",
		"101/stat":   "101 (a) (b) R 100 100 100 0 -1 4194304 ...\n",
		"101/status": "Name:\ta) (b\nVmRSS:\t    2000 kB\n",
		// A zombie in group 100 does not count.
		"102/stat":   "102 (defunct) Z 100 100 100 0 -1\n",
		"102/status": "Name:\tdefunct\n",
		// An exiting process without VmRSS does not count.
		"103/stat":   "103 (exiting) S 100 100 100 0 -1\n",
		"103/status": "Name:\texiting\n",
		// Another group.
		"200/stat":   "200 (sleep) S 1 200 200 0 -1\n",
		"200/status": "Name:\tsleep\nVmRSS:\t     500 kB\n",
		// A group with only a zombie.
		"300/stat": "300 (gone) Z 1 300 300 0 -1\n",
		// Not processes.
		"self/stat": "1 (x) S 0 100 1\n",
		"meminfo":   "MemTotal: 1 kB\n",
	})
	got, err := scanProcessGroups(procRoot, map[int]bool{100: true, 300: true, 400: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]groupUsage{100: {rss: 3000 * 1024, live: 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestProcessGroupRSS(t *testing.T) {
	t.Run("a live process group reports at least the memory it touched", func(t *testing.T) {
		c := startAllocator(t, 32, time.Minute)
		c.release(t)
		c.awaitReady(t)
		rss, err := ProcessGroupRSS(c.pid())
		if err != nil {
			t.Fatal(err)
		}
		if rss < 32*mib {
			t.Errorf("ProcessGroupRSS() = %d, want at least 32 MiB", rss)
		}
		if err := syscall.Kill(-c.pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.wait(t)
		if _, err := ProcessGroupRSS(c.pid()); !errors.Is(err, ErrNoProcessGroup) {
			t.Errorf("after the group died: err = %v, want ErrNoProcessGroup", err)
		}
	})

	t.Run("an invalid process group id is an error", func(t *testing.T) {
		for _, pgid := range []int{0, -5} {
			if _, err := ProcessGroupRSS(pgid); err == nil {
				t.Errorf("ProcessGroupRSS(%d) succeeded", pgid)
			}
		}
	})
}
