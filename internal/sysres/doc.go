// Package sysres discovers and controls the system resources of the local
// host on behalf of a job runner that starts worker processes.
//
// It has two halves:
//
//   - Detect reports the capacity of the machine as seen by this process:
//     logical CPUs and memory (both reduced by any cgroup limit that applies
//     to this process), NVIDIA GPUs (via nvidia-smi), CPU feature flags and
//     free ephemeral storage.
//
//   - A Limiter creates one Group per worker. A Group enforces a memory limit
//     on the processes attached to it, measures their peak memory use and
//     reports whether they were killed for running out of memory.
//
// Three Limiter implementations exist, chosen by NewLimiter in this order of
// preference:
//
//   - "cgroup2": a child of this process's own cgroup on the unified (v2)
//     hierarchy, using memory.max, memory.peak and memory.events.
//   - "cgroup1": a child of this process's own memory cgroup on a v1
//     hierarchy, using memory.limit_in_bytes, memory.max_usage_in_bytes and
//     memory.oom_control.
//   - "watchdog": no kernel support; a goroutine samples the resident set
//     size of each attached process group from /proc and SIGKILLs the process
//     group when it exceeds the limit. It is only as precise as its sampling
//     interval: a process may briefly exceed the limit, or allocate and
//     free memory between two samples without being noticed.
//
// The cgroup Limiters place their parent group below this process's own
// cgroup (never at the hierarchy root unless that is where this process
// lives) and name it "meadowrun-<pid>-<random>", so that several runners or
// tests on one machine do not collide.
//
// A typical use by a driver:
//
//	lim, err := sysres.NewLimiter(sysres.LimiterOptions{})
//	...
//	defer lim.Close()
//	g, err := lim.NewGroup("worker-1", 2<<30)
//	...
//	defer g.Close()
//	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
//	if err := cmd.Start(); err != nil { ... }
//	if err := g.Attach(cmd.Process.Pid); err != nil { ... }
//	err = cmd.Wait()
//	oom, _ := g.OOMKilled()
//	peak, _ := g.PeakBytes()
//
// Memory is only charged to a cgroup from the moment a process is attached
// to it; memory a process allocated between its start and Attach stays
// charged to the cgroup of the runner. Attach right after the process starts.
//
// The package is Linux-only: it reads /proc and the cgroup file systems.
package sysres
