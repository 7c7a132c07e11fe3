package sysres

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nvidiaSMITimeout bounds one nvidia-smi invocation, which can hang for a
// long time when the driver is wedged.
const nvidiaSMITimeout = 5 * time.Second

// Capacity is the capacity of a machine as available to this process.
type Capacity struct {
	// LogicalCPU is runtime.NumCPU(), reduced by the cgroup CPU quota
	// (v1 cpu.cfs_quota_us/cpu.cfs_period_us or v2 cpu.max) of this
	// process's cgroup or of one of its ancestors, if such a quota applies.
	// It is fractional when the quota is.
	LogicalCPU float64
	// MemoryBytes is MemTotal from /proc/meminfo, reduced to the memory
	// limit (v1 memory.limit_in_bytes or v2 memory.max) of this process's
	// cgroup or of one of its ancestors, if such a limit is set.
	MemoryBytes int64
	// GPUs lists the NVIDIA GPUs reported by nvidia-smi, in nvidia-smi's
	// order. It is empty when nvidia-smi is not installed.
	GPUs []GPU
	// Flags are sorted capability flags: "avx", "avx2" and "avx512" (when
	// the CPU has avx512f) from /proc/cpuinfo, "intel" or "amd_cpu" from the
	// CPU vendor, and "nvidia" when GPUs is not empty.
	Flags []string
	// EphemeralStorageBytes is the space available to unprivileged users
	// (statfs f_bavail × f_bsize) on the file system holding
	// DetectOptions.StorageDir.
	EphemeralStorageBytes int64
}

// GPU describes one GPU as reported by nvidia-smi.
type GPU struct {
	// Index is nvidia-smi's index of the GPU, as used in
	// CUDA_VISIBLE_DEVICES.
	Index int
	// UUID is the GPU's stable identifier, such as "GPU-5e1b…".
	UUID string
	// Name is the product name, such as "NVIDIA A100-SXM4-40GB".
	Name string
	// MemoryBytes is the GPU's total memory; 0 if nvidia-smi does not know.
	MemoryBytes int64
}

// DetectOptions configures Detect. The zero value detects the real machine.
type DetectOptions struct {
	// NvidiaSMI is the path of the nvidia-smi binary. "" looks it up in
	// PATH. A binary that does not exist means the machine has no GPUs,
	// which is not an error.
	NvidiaSMI string
	// ProcRoot is where the proc file system is mounted; "" means "/proc".
	// Tests point it at fixtures.
	ProcRoot string
	// CgroupRoot is where the cgroup file systems are mounted; "" means
	// "/sys/fs/cgroup". Tests point it at fixtures.
	CgroupRoot string
	// StorageDir is the directory whose file system provides ephemeral
	// storage to workers; "" means os.TempDir().
	StorageDir string
}

// Detect reports the capacity of the machine as available to this process.
//
// It runs nvidia-smi, with a timeout of five seconds derived from ctx, only
// if the binary exists; without it, GPU detection costs a single PATH
// lookup. Nothing is cached: every call reads the machine afresh.
//
// If nvidia-smi exists but fails, Detect returns the error together with a
// Capacity that is complete except for GPUs, so that a caller may choose to
// carry on without GPUs.
func Detect(ctx context.Context, opts DetectOptions) (Capacity, error) {
	procRoot := orDefault(opts.ProcRoot, defaultProcRoot)
	cgRoot := orDefault(opts.CgroupRoot, defaultCgroupRoot)
	storageDir := orDefault(opts.StorageDir, os.TempDir())

	var c Capacity
	memTotal, err := readMemTotal(filepath.Join(procRoot, "meminfo"))
	if err != nil {
		return Capacity{}, err
	}
	view, err := loadCgroupView(procRoot, cgRoot)
	if err != nil {
		return Capacity{}, fmt.Errorf("sysres: %w", err)
	}
	c.MemoryBytes = memTotal
	if limit, ok := cgroupMemoryLimit(view); ok && limit < c.MemoryBytes {
		c.MemoryBytes = limit
	}
	c.LogicalCPU = float64(runtime.NumCPU())
	if quota, ok := cgroupCPUQuota(view); ok && quota < c.LogicalCPU {
		c.LogicalCPU = quota
	}

	cpuinfo, err := os.ReadFile(filepath.Join(procRoot, "cpuinfo"))
	if err != nil {
		return Capacity{}, fmt.Errorf("sysres: %w", err)
	}
	c.Flags = cpuFlags(cpuinfo)

	var st syscall.Statfs_t
	if err := syscall.Statfs(storageDir, &st); err != nil {
		return Capacity{}, fmt.Errorf("sysres: statfs %s: %w", storageDir, err)
	}
	c.EphemeralStorageBytes = int64(st.Bavail) * int64(st.Bsize)

	gpus, gpuErr := queryGPUs(ctx, opts.NvidiaSMI)
	if len(gpus) > 0 {
		c.GPUs = gpus
		c.Flags = append(c.Flags, "nvidia")
	}
	slices.Sort(c.Flags)
	return c, gpuErr
}

// orDefault returns s, or def if s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// readMemTotal returns MemTotal from a meminfo file, in bytes.
func readMemTotal(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("sysres: %w", err)
	}
	kb, err := parseMeminfoKB(data, "MemTotal")
	if err != nil {
		return 0, fmt.Errorf("sysres: %s: %w", path, err)
	}
	return kb * 1024, nil
}

// parseMeminfoKB finds "key: N kB" in /proc/meminfo or /proc/<pid>/status
// contents and returns N.
func parseMeminfoKB(data []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s: %w", key, err)
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s line: %w", key, errNoKey)
}

// errNoKey is returned (wrapped) by parseMeminfoKB when the key is absent.
var errNoKey = errors.New("key not found")

// cgroupMemoryLimit returns the lowest memory limit set on this process's
// cgroup or its ancestors, in either hierarchy.
func cgroupMemoryLimit(v cgroupView) (int64, bool) {
	limit, found := int64(math.MaxInt64), false
	for _, dir := range v.v1Chain("memory", "memory.limit_in_bytes") {
		if n, err := readInt64(filepath.Join(dir, "memory.limit_in_bytes")); err == nil && n > 0 && n < limit {
			limit, found = n, true
		}
	}
	for _, dir := range v.v2Chain() {
		s, err := readString(filepath.Join(dir, "memory.max"))
		if err != nil {
			continue // the root cgroup and cgroups without the controller have none
		}
		if n, err := parseMax(s); err == nil && n >= 0 && n < limit {
			limit, found = n, true
		}
	}
	return limit, found
}

// cgroupCPUQuota returns the lowest CPU quota, in CPUs, set on this process's
// cgroup or its ancestors, in either hierarchy.
func cgroupCPUQuota(v cgroupView) (float64, bool) {
	quota, found := math.Inf(1), false
	for _, dir := range v.v1Chain("cpu", "cpu.cfs_quota_us") {
		q, err1 := readInt64(filepath.Join(dir, "cpu.cfs_quota_us"))
		p, err2 := readInt64(filepath.Join(dir, "cpu.cfs_period_us"))
		if err1 == nil && err2 == nil && q > 0 && p > 0 && float64(q)/float64(p) < quota {
			quota, found = float64(q)/float64(p), true
		}
	}
	for _, dir := range v.v2Chain() {
		s, err := readString(filepath.Join(dir, "cpu.max"))
		if err != nil {
			continue
		}
		if q, ok := parseCPUMax(s); ok && q < quota {
			quota, found = q, true
		}
	}
	return quota, found
}

// parseCPUMax parses a cgroup v2 cpu.max file ("$MAX $PERIOD", where $MAX
// may be "max") into a number of CPUs. It reports false when there is no
// quota or the contents are malformed.
func parseCPUMax(s string) (float64, bool) {
	fields := strings.Fields(s)
	if len(fields) == 0 || fields[0] == "max" {
		return 0, false
	}
	q, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil || q <= 0 {
		return 0, false
	}
	period := int64(100000) // the kernel's default when only $MAX is given
	if len(fields) > 1 {
		if period, err = strconv.ParseInt(fields[1], 10, 64); err != nil || period <= 0 {
			return 0, false
		}
	}
	return float64(q) / float64(period), true
}

// cpuFlags derives capability flags from the first processor described in
// /proc/cpuinfo contents. The result is not sorted.
func cpuFlags(cpuinfo []byte) []string {
	var flags []string
	sawVendor, sawFlags := false, false
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20) // flags lines are long
	for sc.Scan() && !(sawVendor && sawFlags) {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "vendor_id":
			if sawVendor {
				continue
			}
			sawVendor = true
			switch strings.TrimSpace(v) {
			case "GenuineIntel":
				flags = append(flags, "intel")
			case "AuthenticAMD":
				flags = append(flags, "amd_cpu")
			}
		case "flags":
			if sawFlags {
				continue
			}
			sawFlags = true
			have := map[string]bool{}
			for f := range strings.FieldsSeq(v) {
				have[f] = true
			}
			for _, f := range []string{"avx", "avx2"} {
				if have[f] {
					flags = append(flags, f)
				}
			}
			if have["avx512f"] {
				flags = append(flags, "avx512")
			}
		}
	}
	return flags
}

// queryGPUs runs nvidia-smi if it exists.
func queryGPUs(ctx context.Context, path string) ([]GPU, error) {
	if path == "" {
		p, err := exec.LookPath("nvidia-smi")
		if err != nil {
			return nil, nil
		}
		path = p
	} else if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}

	ctx, cancel := context.WithTimeout(ctx, nvidiaSMITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path,
		"--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits")
	cmd.WaitDelay = time.Second // do not wait for grandchildren holding the pipes
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sysres: running %s: %w", path, ctx.Err())
		}
		// Exit status 6 with this message: the driver is loaded but there
		// is no GPU, which is a machine without GPUs rather than an error.
		if bytes.Contains(out, []byte("No devices were found")) ||
			bytes.Contains(stderr.Bytes(), []byte("No devices were found")) {
			return nil, nil
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(string(out))
		}
		if len(msg) > 512 {
			msg = msg[:512]
		}
		return nil, fmt.Errorf("sysres: running %s: %w: %s", path, err, msg)
	}
	return ParseNvidiaSMI(out)
}

// ParseNvidiaSMI parses the output of
//
//	nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits
//
// in which memory.total is in MiB. Blank lines are ignored; a memory size
// of "[N/A]" yields MemoryBytes 0; any other line that does not have this
// shape is an error.
func ParseNvidiaSMI(out []byte) ([]GPU, error) {
	var gpus []GPU
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		fields := strings.Split(line, ",")
		if len(fields) < 4 {
			return nil, fmt.Errorf("sysres: malformed nvidia-smi line %q: want 4 fields", line)
		}
		for i := range fields {
			fields[i] = strings.TrimSpace(fields[i])
		}
		last := len(fields) - 1
		idx, err := strconv.Atoi(fields[0])
		if err != nil {
			return nil, fmt.Errorf("sysres: malformed nvidia-smi line %q: %w", line, err)
		}
		if idx < 0 {
			return nil, fmt.Errorf("sysres: malformed nvidia-smi line %q: negative index", line)
		}
		// A product name could contain a comma; index, UUID and memory
		// cannot, so everything between them is the name.
		g := GPU{Index: idx, UUID: fields[1], Name: strings.Join(fields[2:last], ", ")}
		if g.UUID == "" || g.Name == "" {
			return nil, fmt.Errorf("sysres: malformed nvidia-smi line %q: empty uuid or name", line)
		}
		if mem := fields[last]; mem != "[N/A]" {
			mib, err := strconv.ParseInt(mem, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("sysres: malformed nvidia-smi line %q: %w", line, err)
			}
			if mib < 0 || mib > math.MaxInt64>>20 {
				return nil, fmt.Errorf("sysres: malformed nvidia-smi line %q: memory.total out of range", line)
			}
			g.MemoryBytes = mib << 20
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}
