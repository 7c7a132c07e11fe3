package sysres

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// OOMCounter reads the kernel's count of OOM kills in this process's own
// memory cgroup: the oom_kill line of memory.events.local or
// memory.events (v2), or of memory.oom_control (v1, kernel 4.13 or later,
// this cgroup's kills only).
//
// It is what the watchdog lacks inside a container with a memory limit
// (a Kubernetes pod): a worker that allocates faster than the watchdog
// samples reaches the container's limit first, and the kernel kills it
// with SIGKILL. A SIGKILL while the count rose is that kill.
type OOMCounter struct {
	path string
}

// NewOOMCounter finds the counter of this process's memory cgroup. It
// fails when there is none (no memory controller, or a kernel without the
// counter).
func NewOOMCounter() (*OOMCounter, error) {
	return newOOMCounter(defaultProcRoot, defaultCgroupRoot)
}

func newOOMCounter(procRoot, cgRoot string) (*OOMCounter, error) {
	v, err := loadCgroupView(procRoot, cgRoot)
	if err != nil {
		return nil, fmt.Errorf("sysres: OOM kill counter: %w", err)
	}
	var candidates []string
	for _, d := range v.v2Chain() {
		// memory.events counts the kills of the cgroups below too (a
		// cgroup limiter's workers); memory.events.local, where the
		// kernel has it, only this cgroup's, where the watchdog's
		// workers are.
		candidates = append(candidates, filepath.Join(d, "memory.events.local"), filepath.Join(d, "memory.events"))
	}
	for _, d := range v.v1Chain("memory", "memory.limit_in_bytes") {
		candidates = append(candidates, filepath.Join(d, "memory.oom_control"))
	}
	// The innermost cgroup with the counter: the one whose limit the
	// container runtime set.
	for _, p := range candidates {
		c := &OOMCounter{path: p}
		if _, err := c.Count(); err == nil {
			return c, nil
		}
	}
	return nil, errors.New("sysres: no oom_kill counter in this process's memory cgroup")
}

// Count is the number of processes the kernel's OOM killer has killed in
// the cgroup so far.
func (c *OOMCounter) Count() (int64, error) {
	data, err := os.ReadFile(c.path)
	if err != nil {
		return 0, fmt.Errorf("sysres: reading the OOM kill count: %w", err)
	}
	n, found, err := parseKeyedValue(data, "oom_kill")
	if err != nil {
		return 0, fmt.Errorf("sysres: %s: %w", c.path, err)
	}
	if !found {
		return 0, fmt.Errorf("sysres: %s has no oom_kill line", c.path)
	}
	return n, nil
}

// Path is the file the count is read from.
func (c *OOMCounter) Path() string { return c.path }
