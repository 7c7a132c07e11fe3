package sysres

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

const (
	defaultProcRoot   = "/proc"
	defaultCgroupRoot = "/sys/fs/cgroup"
)

// cgroupEntry is one line of /proc/<pid>/cgroup:
// "hierarchy-ID:controller-list:cgroup-path".
type cgroupEntry struct {
	id          int
	controllers []string // empty for the unified (v2) hierarchy
	path        string
}

// parseProcCgroup parses the contents of /proc/<pid>/cgroup.
func parseProcCgroup(data []byte) ([]cgroupEntry, error) {
	var entries []cgroupEntry
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("malformed cgroup line %q", line)
		}
		id, err := strconv.Atoi(parts[0])
		if err != nil {
			return nil, fmt.Errorf("malformed cgroup line %q: %w", line, err)
		}
		if !strings.HasPrefix(parts[2], "/") {
			return nil, fmt.Errorf("malformed cgroup line %q: path is not absolute", line)
		}
		var controllers []string
		if parts[1] != "" {
			controllers = strings.Split(parts[1], ",")
		}
		entries = append(entries, cgroupEntry{id: id, controllers: controllers, path: parts[2]})
	}
	return entries, nil
}

// mountInfo is the part of one /proc/<pid>/mountinfo line that this package
// needs.
type mountInfo struct {
	root       string // the path inside the file system that is mounted
	mountPoint string
	fsType     string
}

// parseMountInfo parses the contents of /proc/<pid>/mountinfo. Lines that do
// not have the documented shape are skipped: mountinfo is only used to refine
// paths, never to decide availability on its own.
func parseMountInfo(data []byte) []mountInfo {
	var mounts []mountInfo
	for line := range strings.Lines(string(data)) {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if sep < 6 || len(fields) < sep+2 {
			continue
		}
		mounts = append(mounts, mountInfo{
			root:       unescapeMountField(fields[3]),
			mountPoint: unescapeMountField(fields[4]),
			fsType:     fields[sep+1],
		})
	}
	return mounts
}

// unescapeMountField undoes the octal escaping ("\040" for a space) that the
// kernel applies to paths in mountinfo.
func unescapeMountField(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupView is what this process knows about its own cgroups: its entries
// in /proc/self/cgroup, the mount table, and where cgroup file systems are
// expected to be mounted.
type cgroupView struct {
	entries []cgroupEntry
	mounts  []mountInfo
	cgRoot  string
}

// loadCgroupView reads /proc/self/cgroup and /proc/self/mountinfo below
// procRoot. A kernel without cgroups (no /proc/self/cgroup) yields an empty
// view, not an error.
func loadCgroupView(procRoot, cgRoot string) (cgroupView, error) {
	v := cgroupView{cgRoot: cgRoot}
	data, err := os.ReadFile(filepath.Join(procRoot, "self", "cgroup"))
	if errors.Is(err, fs.ErrNotExist) {
		return v, nil
	}
	if err != nil {
		return v, fmt.Errorf("reading own cgroup: %w", err)
	}
	if v.entries, err = parseProcCgroup(data); err != nil {
		return v, err
	}
	if data, err := os.ReadFile(filepath.Join(procRoot, "self", "mountinfo")); err == nil {
		v.mounts = parseMountInfo(data)
	}
	return v, nil
}

// v1Mount returns the directory where the v1 hierarchy carrying controller
// is mounted below the cgroup root, or "" if there is none. marker is a file
// that the controller creates in every cgroup, used to tell a real
// hierarchy from an unrelated directory of the same name.
func (v cgroupView) v1Mount(controller, marker string) string {
	candidates := []string{filepath.Join(v.cgRoot, controller)}
	if des, err := os.ReadDir(v.cgRoot); err == nil {
		for _, de := range des {
			if de.Name() != controller && slices.Contains(strings.Split(de.Name(), ","), controller) {
				candidates = append(candidates, filepath.Join(v.cgRoot, de.Name()))
			}
		}
	}
	for _, dir := range candidates {
		if fileExists(filepath.Join(dir, marker)) {
			return dir
		}
	}
	return ""
}

// v2Mount returns the directory where the unified hierarchy is mounted: the
// cgroup root itself on a pure v2 system, or its "unified" subdirectory on a
// hybrid one. It returns "" if there is none.
func (v cgroupView) v2Mount() string {
	for _, dir := range []string{v.cgRoot, filepath.Join(v.cgRoot, "unified")} {
		if fileExists(filepath.Join(dir, "cgroup.controllers")) {
			return dir
		}
	}
	return ""
}

// v1Path returns this process's cgroup path in the v1 hierarchy carrying
// controller.
func (v cgroupView) v1Path(controller string) (string, bool) {
	for _, e := range v.entries {
		if e.id != 0 && slices.Contains(e.controllers, controller) {
			return e.path, true
		}
	}
	return "", false
}

// v2Path returns this process's cgroup path in the unified hierarchy.
func (v cgroupView) v2Path() (string, bool) {
	for _, e := range v.entries {
		if e.id == 0 && len(e.controllers) == 0 {
			return e.path, true
		}
	}
	return "", false
}

// ownDir maps this process's cgroup path onto the directory of the
// hierarchy mounted at mountPoint. When the mount shows a subtree of the
// hierarchy (a container without a cgroup namespace sees "/docker/<id>" in
// /proc/self/cgroup while its mount root is that very cgroup), the mount's
// root is stripped from the path first. It fails if the directory does not
// exist or would lie outside the mount.
func (v cgroupView) ownDir(mountPoint, cgPath string) (string, error) {
	rel := cgPath
	for _, m := range v.mounts {
		if filepath.Clean(m.mountPoint) != filepath.Clean(mountPoint) {
			continue
		}
		if m.fsType != "cgroup" && m.fsType != "cgroup2" {
			continue
		}
		// The last matching mount shadows earlier ones, so keep looking.
		rel = cgPath
		if root := filepath.Clean(m.root); root != "/" {
			if cgPath == root {
				rel = "/"
			} else if strings.HasPrefix(cgPath, root+"/") {
				rel = strings.TrimPrefix(cgPath, root)
			}
		}
	}
	if slices.Contains(strings.Split(rel, "/"), "..") {
		return "", fmt.Errorf("own cgroup %q lies outside the mount at %s", cgPath, mountPoint)
	}
	dir := filepath.Join(mountPoint, rel)
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("own cgroup directory: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("own cgroup %s is not a directory", dir)
	}
	return dir, nil
}

// v1Chain returns the directories of this process's v1 cgroup for
// controller and of its ancestors up to the mount point, innermost first,
// or nil if the controller's hierarchy is not available.
func (v cgroupView) v1Chain(controller, marker string) []string {
	mount := v.v1Mount(controller, marker)
	if mount == "" {
		return nil
	}
	p, ok := v.v1Path(controller)
	if !ok {
		return nil
	}
	dir, err := v.ownDir(mount, p)
	if err != nil {
		return nil
	}
	return ancestry(mount, dir)
}

// v2Chain is v1Chain for the unified hierarchy.
func (v cgroupView) v2Chain() []string {
	mount := v.v2Mount()
	if mount == "" {
		return nil
	}
	p, ok := v.v2Path()
	if !ok {
		return nil
	}
	dir, err := v.ownDir(mount, p)
	if err != nil {
		return nil
	}
	return ancestry(mount, dir)
}

// ancestry returns dir and its parents up to and including mount.
func ancestry(mount, dir string) []string {
	mount = filepath.Clean(mount)
	dirs := []string{filepath.Clean(dir)}
	for d := dirs[0]; d != mount; {
		parent := filepath.Dir(d)
		if parent == d || len(parent) < len(mount) {
			break
		}
		d = parent
		dirs = append(dirs, d)
	}
	return dirs
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Unexported helpers return errors without the "sysres: " prefix; exported
// functions and methods add it, with context, when they return them.

// readString returns the trimmed contents of a small file.
func readString(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(data)), nil
}

// readInt64 reads a file holding a single decimal integer.
func readInt64(path string) (int64, error) {
	s, err := readString(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	return n, nil
}

// parseMax parses a cgroup v2 limit: a decimal number or "max". It returns
// -1 for "max".
func parseMax(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing limit %q: %w", s, err)
	}
	return n, nil
}

// parseKeyedValue finds "key N" in a flat-keyed cgroup file such as
// memory.events, memory.stat or memory.oom_control.
func parseKeyedValue(data []byte, key string) (int64, bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("parsing %q: %w", sc.Text(), err)
		}
		return n, true, nil
	}
	if err := sc.Err(); err != nil {
		return 0, false, err
	}
	return 0, false, nil
}

// writeFile writes s to an existing file, as a single write. Unlike
// os.WriteFile it never creates the file: a missing cgroup interface file
// means the controller is absent, and must not be papered over.
func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(s)); err != nil {
		f.Close()
		return fmt.Errorf("writing %q to %s: %w", s, path, err)
	}
	return f.Close()
}

// readPids parses a cgroup.procs file.
func readPids(path string) ([]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	for f := range strings.FieldsSeq(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// isNotSupported reports whether err says that a cgroup interface file
// cannot be written because the kernel does not support the operation.
func isNotSupported(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EACCES) ||
		errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EOPNOTSUPP) ||
		errors.Is(err, fs.ErrNotExist)
}
