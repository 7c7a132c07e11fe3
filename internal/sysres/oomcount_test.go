package sysres

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOOMCounter(t *testing.T) {
	tests := []struct {
		name     string
		proc     map[string]string // below ProcRoot; CGROOT stands for CgroupRoot
		cgroup   map[string]string // below CgroupRoot
		wantPath string            // below CgroupRoot; "" for none
		want     int64
	}{
		{
			name: "a container's v1 memory cgroup, mounted as the hierarchy's root, is read",
			proc: map[string]string{
				"self/cgroup":    "5:memory:/kubepods/pod1/c1\n0::/\n",
				"self/mountinfo": "30 25 0:27 /kubepods/pod1/c1 CGROOT/memory ro,nosuid - cgroup cgroup rw,memory\n",
			},
			cgroup: map[string]string{
				"memory/memory.limit_in_bytes": "201326592\n",
				"memory/memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
			},
			wantPath: "memory/memory.oom_control",
			want:     3,
		},
		{
			name: "the innermost cgroup with the counter wins",
			proc: map[string]string{"self/cgroup": "0::/jobs/a\n"},
			cgroup: map[string]string{
				"cgroup.controllers":        "memory\n",
				"memory.events":             "low 0\nhigh 0\nmax 0\noom 9\noom_kill 9\n",
				"jobs/a/memory.events":      "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
				"jobs/a/cgroup.controllers": "memory\n",
			},
			wantPath: "jobs/a/memory.events",
			want:     1,
		},
		{
			name: "v2's count of this cgroup's own kills is preferred to the count of its subtree",
			proc: map[string]string{"self/cgroup": "0::/jobs/a\n"},
			cgroup: map[string]string{
				"cgroup.controllers":         "memory\n",
				"jobs/a/cgroup.controllers":  "memory\n",
				"jobs/a/memory.events":       "low 0\nhigh 0\nmax 4\noom 7\noom_kill 7\n",
				"jobs/a/memory.events.local": "low 0\nhigh 0\nmax 1\noom 2\noom_kill 2\n",
			},
			wantPath: "jobs/a/memory.events.local",
			want:     2,
		},
		{
			name: "a kernel without the counter has none",
			proc: map[string]string{"self/cgroup": "5:memory:/\n"},
			cgroup: map[string]string{
				"memory/memory.limit_in_bytes": "9223372036854771712\n",
				"memory/memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\n",
			},
		},
		{
			name: "a machine without cgroups has none",
			proc: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			procRoot, cgRoot := t.TempDir(), t.TempDir()
			write := func(root string, files map[string]string) {
				for name, data := range files {
					data = strings.ReplaceAll(data, "CGROOT", cgRoot)
					p := filepath.Join(root, name)
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			write(procRoot, tt.proc)
			write(cgRoot, tt.cgroup)
			c, err := newOOMCounter(procRoot, cgRoot)
			if tt.wantPath == "" {
				if err == nil {
					t.Fatalf("found a counter at %s, want none", c.Path())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(cgRoot, tt.wantPath); c.Path() != want {
				t.Errorf("path %s, want %s", c.Path(), want)
			}
			n, err := c.Count()
			if err != nil || n != tt.want {
				t.Errorf("Count() = %d, %v; want %d", n, err, tt.want)
			}
		})
	}
}
