package sysres

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDetectOnThisMachine(t *testing.T) {
	memTotal, err := readMemTotal("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, c Capacity) {
		t.Helper()
		if c.LogicalCPU <= 0 || c.LogicalCPU > float64(runtime.NumCPU()) {
			t.Errorf("LogicalCPU = %v, want in (0, %d]", c.LogicalCPU, runtime.NumCPU())
		}
		if c.MemoryBytes <= 0 || c.MemoryBytes > memTotal {
			t.Errorf("MemoryBytes = %d, want in (0, %d]", c.MemoryBytes, memTotal)
		}
		if len(c.GPUs) != 0 || slices.Contains(c.Flags, "nvidia") {
			t.Errorf("GPUs = %v, Flags = %v; want no GPUs", c.GPUs, c.Flags)
		}
		if !slices.IsSorted(c.Flags) {
			t.Errorf("Flags %v are not sorted", c.Flags)
		}
		if c.EphemeralStorageBytes <= 0 {
			t.Errorf("EphemeralStorageBytes = %d, want > 0", c.EphemeralStorageBytes)
		}
		t.Logf("%+v", c)
	}

	t.Run("an absent nvidia-smi path means no GPUs", func(t *testing.T) {
		c, err := Detect(t.Context(), DetectOptions{NvidiaSMI: filepath.Join(t.TempDir(), "nvidia-smi")})
		if err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})

	t.Run("nvidia-smi missing from PATH means no GPUs", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		c, err := Detect(t.Context(), DetectOptions{StorageDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})

	t.Run("a missing storage directory is an error", func(t *testing.T) {
		_, err := Detect(t.Context(), DetectOptions{StorageDir: filepath.Join(t.TempDir(), "missing")})
		if err == nil {
			t.Fatal("no error")
		}
	})
}

const (
	amdCPUInfo = `processor	: 0
vendor_id	: AuthenticAMD
flags		: fpu sse sse2 avx avx2 fma
processor	: 1
vendor_id	: AuthenticAMD
flags		: fpu sse sse2 avx avx2 fma
`
	intelCPUInfo = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R)
flags		: fpu sse avx avx2 avx512f avx512bw
`
	armCPUInfo = `processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm
`
	meminfo8G = "MemTotal:        8388608 kB\nMemFree:         1000 kB\n"
)

// nvidiaSMIScript is a fake nvidia-smi listing two GPUs.
const nvidiaSMIScript = `#!/bin/sh
echo "0, GPU-11111111-2222-3333-4444-555555555555, NVIDIA A100-SXM4-40GB, 40960"
echo "1, GPU-66666666-7777-8888-9999-000000000000, NVIDIA A100-SXM4-40GB, 40960"
`

func TestDetectWithFixtures(t *testing.T) {
	ncpu := float64(runtime.NumCPU())
	tests := []struct {
		name       string
		proc       map[string]string // below ProcRoot
		cgroup     map[string]string // below CgroupRoot
		nvidiaSMI  string            // script contents; "" for none
		wantMem    int64
		wantCPU    float64
		wantFlags  []string
		wantGPUs   int
		wantGPUMem int64
	}{
		{
			name:      "a machine without cgroups reports MemTotal and all CPUs",
			proc:      map[string]string{"meminfo": meminfo8G, "cpuinfo": amdCPUInfo},
			wantMem:   8 << 30,
			wantCPU:   ncpu,
			wantFlags: []string{"amd_cpu", "avx", "avx2"},
		},
		{
			name: "a cgroup v1 memory limit below MemTotal caps MemoryBytes",
			proc: map[string]string{
				"meminfo":     meminfo8G,
				"cpuinfo":     intelCPUInfo,
				"self/cgroup": "4:memory:/jobs/a\n1:cpu,cpuacct:/jobs/a\n0::/\n",
			},
			cgroup: map[string]string{
				"memory/memory.limit_in_bytes":         "9223372036854771712\n",
				"memory/jobs/memory.limit_in_bytes":    "9223372036854771712\n",
				"memory/jobs/a/memory.limit_in_bytes":  "2147483648\n",
				"cpu,cpuacct/cpu.cfs_quota_us":         "-1\n",
				"cpu,cpuacct/cpu.cfs_period_us":        "100000\n",
				"cpu,cpuacct/jobs/a/cpu.cfs_quota_us":  "50000\n",
				"cpu,cpuacct/jobs/a/cpu.cfs_period_us": "100000\n",
			},
			wantMem:   2 << 30,
			wantCPU:   0.5,
			wantFlags: []string{"avx", "avx2", "avx512", "intel"},
		},
		{
			name: "a limit on an ancestor cgroup applies too",
			proc: map[string]string{
				"meminfo":     meminfo8G,
				"cpuinfo":     armCPUInfo,
				"self/cgroup": "4:memory:/jobs/a\n",
			},
			cgroup: map[string]string{
				"memory/memory.limit_in_bytes":        "9223372036854771712\n",
				"memory/jobs/memory.limit_in_bytes":   "1073741824\n",
				"memory/jobs/a/memory.limit_in_bytes": "2147483648\n",
			},
			wantMem: 1 << 30,
			wantCPU: ncpu,
		},
		{
			name: "an unlimited cgroup leaves MemTotal",
			proc: map[string]string{
				"meminfo":     meminfo8G,
				"cpuinfo":     amdCPUInfo,
				"self/cgroup": "4:memory:/a\n",
			},
			cgroup: map[string]string{
				"memory/memory.limit_in_bytes":   "9223372036854771712\n",
				"memory/a/memory.limit_in_bytes": "9223372036854771712\n",
			},
			wantMem:   8 << 30,
			wantCPU:   ncpu,
			wantFlags: []string{"amd_cpu", "avx", "avx2"},
		},
		{
			name: "memory.max and cpu.max apply on a pure cgroup v2 hierarchy",
			proc: map[string]string{
				"meminfo":     meminfo8G,
				"cpuinfo":     amdCPUInfo,
				"self/cgroup": "0::/system.slice/runner.service\n",
			},
			cgroup: map[string]string{
				"cgroup.controllers":                                 "cpu io memory pids\n",
				"system.slice/memory.max":                            "max\n",
				"system.slice/cpu.max":                               "max 100000\n",
				"system.slice/runner.service/memory.max":             "536870912\n",
				"system.slice/runner.service/cpu.max":                "150000 100000\n",
				"system.slice/runner.service/cgroup.procs":           "1\n",
				"system.slice/runner.service/memory.current":         "1000\n",
				"system.slice/runner.service/cgroup.subtree_control": "\n",
			},
			wantMem:   512 << 20,
			wantCPU:   min(1.5, ncpu),
			wantFlags: []string{"amd_cpu", "avx", "avx2"},
		},
		{
			name: "a cgroup path is mapped through the mount root of a container",
			proc: map[string]string{
				"meminfo":     meminfo8G,
				"cpuinfo":     amdCPUInfo,
				"self/cgroup": "4:memory:/docker/abc\n",
				// The mount point is rewritten by the test to the fixture.
				"self/mountinfo": "34 30 0:31 /docker/abc CGROOT/memory rw,relatime - cgroup cgroup rw,memory\n",
			},
			cgroup: map[string]string{
				"memory/memory.limit_in_bytes": "1073741824\n",
			},
			wantMem:   1 << 30,
			wantCPU:   ncpu,
			wantFlags: []string{"amd_cpu", "avx", "avx2"},
		},
		{
			name:       "GPUs listed by nvidia-smi are reported with the nvidia flag",
			proc:       map[string]string{"meminfo": meminfo8G, "cpuinfo": amdCPUInfo},
			nvidiaSMI:  nvidiaSMIScript,
			wantMem:    8 << 30,
			wantCPU:    ncpu,
			wantFlags:  []string{"amd_cpu", "avx", "avx2", "nvidia"},
			wantGPUs:   2,
			wantGPUMem: 40 << 30,
		},
		{
			name:      "nvidia-smi finding no devices means no GPUs",
			proc:      map[string]string{"meminfo": meminfo8G, "cpuinfo": amdCPUInfo},
			nvidiaSMI: "#!/bin/sh\necho 'No devices were found'\nexit 6\n",
			wantMem:   8 << 30,
			wantCPU:   ncpu,
			wantFlags: []string{"amd_cpu", "avx", "avx2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			procRoot, cgRoot := t.TempDir(), t.TempDir()
			proc := map[string]string{}
			for k, v := range tt.proc {
				proc[k] = strings.ReplaceAll(v, "CGROOT", cgRoot)
			}
			writeFixture(t, procRoot, proc)
			writeFixture(t, cgRoot, tt.cgroup)
			opts := DetectOptions{
				ProcRoot:   procRoot,
				CgroupRoot: cgRoot,
				NvidiaSMI:  filepath.Join(t.TempDir(), "nvidia-smi"),
			}
			if tt.nvidiaSMI != "" {
				writeScript(t, opts.NvidiaSMI, tt.nvidiaSMI)
			}
			c, err := Detect(t.Context(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if c.MemoryBytes != tt.wantMem {
				t.Errorf("MemoryBytes = %d, want %d", c.MemoryBytes, tt.wantMem)
			}
			if c.LogicalCPU != tt.wantCPU {
				t.Errorf("LogicalCPU = %v, want %v", c.LogicalCPU, tt.wantCPU)
			}
			if !slices.Equal(c.Flags, tt.wantFlags) {
				t.Errorf("Flags = %q, want %q", c.Flags, tt.wantFlags)
			}
			if len(c.GPUs) != tt.wantGPUs {
				t.Fatalf("GPUs = %v, want %d", c.GPUs, tt.wantGPUs)
			}
			for _, g := range c.GPUs {
				if g.MemoryBytes != tt.wantGPUMem {
					t.Errorf("GPU %d MemoryBytes = %d, want %d", g.Index, g.MemoryBytes, tt.wantGPUMem)
				}
			}
		})
	}
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestDetectReportsNvidiaSMIFailures(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		timeout  time.Duration
		wantErr  error // nil: any error
		wantFast bool
	}{
		{
			name:   "nvidia-smi exiting with an error is an error",
			script: "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2\nexit 9\n",
		},
		{
			name:   "garbage output is an error",
			script: "#!/bin/sh\necho 'hello world'\n",
		},
		{
			name:    "a hanging nvidia-smi is stopped when the context expires",
			script:  "#!/bin/sh\nexec sleep 100\n",
			timeout: 200 * time.Millisecond,
			wantErr: context.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "nvidia-smi")
			writeScript(t, path, tt.script)
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			c, err := Detect(ctx, DetectOptions{NvidiaSMI: path})
			if err == nil {
				t.Fatal("no error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v does not wrap %v", err, tt.wantErr)
			}
			if d := time.Since(start); d > nvidiaSMITimeout {
				t.Errorf("Detect took %v", d)
			}
			if c.MemoryBytes <= 0 || c.LogicalCPU <= 0 {
				t.Errorf("the rest of the capacity is missing: %+v", c)
			}
			t.Log(err)
		})
	}
}

func TestParseNvidiaSMI(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []GPU
		wantErr bool
	}{
		{
			name: "two GPUs are parsed in order with memory in bytes",
			out: "0, GPU-aaaa, NVIDIA A100-SXM4-40GB, 40960\n" +
				"1, GPU-bbbb, Tesla T4, 15360\n",
			want: []GPU{
				{Index: 0, UUID: "GPU-aaaa", Name: "NVIDIA A100-SXM4-40GB", MemoryBytes: 40960 << 20},
				{Index: 1, UUID: "GPU-bbbb", Name: "Tesla T4", MemoryBytes: 15360 << 20},
			},
		},
		{
			name: "blank lines and CRLF line ends are tolerated",
			out:  "\r\n0, GPU-aaaa, Tesla T4, 15360\r\n\n",
			want: []GPU{{Index: 0, UUID: "GPU-aaaa", Name: "Tesla T4", MemoryBytes: 15360 << 20}},
		},
		{
			name: "a name containing a comma is kept whole",
			out:  "3, GPU-cccc, Quadro RTX, Max-Q, 8192\n",
			want: []GPU{{Index: 3, UUID: "GPU-cccc", Name: "Quadro RTX, Max-Q", MemoryBytes: 8192 << 20}},
		},
		{
			name: "unknown memory is reported as zero",
			out:  "0, GPU-dddd, NVIDIA GH200, [N/A]\n",
			want: []GPU{{Index: 0, UUID: "GPU-dddd", Name: "NVIDIA GH200"}},
		},
		{
			name: "empty output means no GPUs",
			out:  "",
		},
		{
			name:    "a garbage line is an error",
			out:     "0, GPU-aaaa, Tesla T4, 15360\nthis is not csv\n",
			wantErr: true,
		},
		{
			name:    "a non-numeric index is an error",
			out:     "x, GPU-aaaa, Tesla T4, 15360\n",
			wantErr: true,
		},
		{
			name:    "a negative index is an error",
			out:     "-1, GPU-aaaa, Tesla T4, 15360\n",
			wantErr: true,
		},
		{
			name:    "non-numeric memory is an error",
			out:     "0, GPU-aaaa, Tesla T4, 15 GiB\n",
			wantErr: true,
		},
		{
			name:    "an empty UUID is an error",
			out:     "0, , Tesla T4, 15360\n",
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNvidiaSMI([]byte(tt.out))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error; got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCPUFlags(t *testing.T) {
	tests := []struct {
		name    string
		cpuinfo string
		want    []string
	}{
		{"an AMD CPU with AVX2 reports amd_cpu, avx and avx2", amdCPUInfo, []string{"amd_cpu", "avx", "avx2"}},
		{"an Intel CPU with avx512f reports avx512", intelCPUInfo, []string{"avx", "avx2", "avx512", "intel"}},
		{"an ARM CPU reports nothing", armCPUInfo, nil},
		{"an empty cpuinfo reports nothing", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cpuFlags([]byte(tt.cpuinfo))
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseCPUMax(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   float64
		wantOK bool
	}{
		{"no quota", "max 100000", 0, false},
		{"one and a half CPUs", "150000 100000", 1.5, true},
		{"a quota without a period uses the default period", "50000", 0.5, true},
		{"garbage", "lots", 0, false},
		{"an empty file", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseCPUMax(tt.in)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseCPUMax(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
