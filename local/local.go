// Package local makes this machine a meadowrun host of its own: a budget
// smaller than the machine, another worker binary, a forced memory
// enforcement. meadowrun.Local() is the shared default that needs none of
// this; a host of this package has its own warm workers, and Close stops
// them.
//
// Workers are processes of this machine: the program re-executed (its
// main must call meadowrun.Main first), each in a memory group (cgroup v2
// or v1) or watched for its resident memory, its GPUs given by
// CUDA_VISIBLE_DEVICES and locked machine-wide.
package local

import (
	"context"
	"fmt"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/buildid"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
)

// Options configure NewHost. The zero value re-executes this program and
// uses the whole machine.
type Options struct {
	// Executable is the worker binary: a program whose main calls
	// meadowrun.Main first. "" means this program.
	Executable string
	// Args and Env (KEY=VALUE) are given to the worker binary.
	Args, Env []string
	// MemoryEnforcement forces "cgroup2", "cgroup1" or "watchdog"; ""
	// picks the best the machine allows.
	MemoryEnforcement string
	// LogicalCPU and MemoryGB, when positive, replace the detected
	// capacity: a smaller budget than the machine has.
	LogicalCPU, MemoryGB float64
	// DockerHost is the Docker engine that runs container deployments
	// ("unix:///var/run/docker.sock", "tcp://HOST:PORT"); "" means
	// DOCKER_HOST, or the engine's default socket.
	DockerHost string
	// ContainerNetwork is the network worker containers join: "host",
	// "none", or a network's name; "" means the engine's default.
	ContainerNetwork string
	// ContainerMounts are bind mounts of every worker container (data a
	// job reads, a directory it writes its output to):
	// "HOST_PATH:CONTAINER_PATH", with ":ro" for read-only.
	ContainerMounts []string
	// CacheDir holds what workers need on disk: the Python worker's
	// script and the Python environments of environment deployments
	// (PipRequirementsFile, ...). "" means meadowrun's directory in the
	// user's cache directory (~/.cache/meadowrun).
	CacheDir string
}

// NewHost detects the machine and prepares a host of it with its own pool
// of warm workers. Close it when done.
func NewHost(ctx context.Context, opts Options) (*meadowrun.Host, error) {
	d, err := localhost.New(ctx, localhost.Options{Executable: opts.Executable, Args: opts.Args, Env: opts.Env,
		Limiter: opts.MemoryEnforcement, LogicalCPU: opts.LogicalCPU, MemoryBytes: int64(opts.MemoryGB * (1 << 30)),
		DockerHost: opts.DockerHost, ContainerNetwork: opts.ContainerNetwork, ContainerMounts: opts.ContainerMounts,
		CacheDir: opts.CacheDir})
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	o := meadowrun.HostOptions{}
	if opts.Executable == "" {
		// Workers re-execute this very program: they must have its build
		// ID.
		o.Digest, _ = buildid.Self()
	}
	return meadowrun.NewHost(d, o), nil
}
