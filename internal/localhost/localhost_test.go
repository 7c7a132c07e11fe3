package localhost

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/sysres"
)

// A modelled machine with two GPUs of different sizes: admission and GPU
// assignment are bookkeeping (and lock files), tested without a GPU. Its
// GPU locks are in lockDir.
func fakeHost(lockDir string) *Host {
	return &Host{
		opts: Options{GPULockDir: lockDir},
		cap: sysres.Capacity{LogicalCPU: 4, MemoryBytes: 8 << 30, EphemeralStorageBytes: 100 << 30,
			Flags: []string{"avx2", "nvidia"},
			GPUs: []sysres.GPU{{Index: 0, UUID: "GPU-small", Name: "small", MemoryBytes: 8 << 30},
				{Index: 1, UUID: "GPU-big", Name: "big", MemoryBytes: 80 << 30}}},
		gpuUsed: map[int]*os.File{}, workers: map[*proc]bool{},
	}
}

func TestFit(t *testing.T) {
	h := fakeHost(t.TempDir())
	cases := []struct {
		name  string
		r     driver.Resources
		want  int
		never string
	}{
		{"CPU bounds how many fit", driver.Resources{LogicalCPU: 1}, 4, ""},
		{"memory bounds how many fit", driver.Resources{LogicalCPU: 0.5, MemoryBytes: 3 << 30}, 2, ""},
		{"one GPU each fits twice", driver.Resources{LogicalCPU: 1, GPUs: 1}, 2, ""},
		{"a large GPU memory request fits only the big GPU", driver.Resources{LogicalCPU: 1, GPUs: 1, GPUMemoryBytes: 40 << 30}, 1, ""},
		{"three GPUs never fit", driver.Resources{LogicalCPU: 1, GPUs: 3}, 0, "3 GPUs"},
		{"more memory than the machine never fits", driver.Resources{LogicalCPU: 1, MemoryBytes: 9 << 30}, 0, "memory"},
		{"a missing flag never fits", driver.Resources{LogicalCPU: 1, Flags: []string{"avx512"}}, 0, "avx512"},
		{"too much GPU memory never fits", driver.Resources{LogicalCPU: 1, GPUs: 1, GPUMemoryBytes: 100 << 30}, 0, "GPU memory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := h.Fit(context.Background(), c.r)
			if c.never != "" {
				if !errors.Is(err, driver.ErrNeverFits) || !strings.Contains(err.Error(), c.never) || !strings.Contains(err.Error(), "this machine has 4 logical CPUs") {
					t.Fatalf("Fit = %d, %v; want ErrNeverFits mentioning %q and the machine", n, err, c.never)
				}
				return
			}
			if err != nil || n != c.want {
				t.Fatalf("Fit = %d, %v; want %d", n, err, c.want)
			}
		})
	}
}

func TestGPUsAreAssignedToOneWorkerEach(t *testing.T) {
	h := fakeHost(t.TempDir())
	r := driver.Resources{LogicalCPU: 1, GPUs: 1}
	a, err := h.reserve(r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.reserve(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 1 || len(b) != 1 || a[0] == b[0] {
		t.Fatalf("assigned %v and %v; want one distinct GPU each", a, b)
	}
	if _, err := h.reserve(r); !errors.Is(err, driver.ErrNoCapacity) {
		t.Fatalf("third reservation: %v, want ErrNoCapacity", err)
	}
	h.release(r, a, nil)
	c, err := h.reserve(r)
	if err != nil || !slices.Equal(c, a) {
		t.Fatalf("after a release got %v, %v; want the freed GPU %v", c, err, a)
	}
	env := workerEnv([]string{"CUDA_VISIBLE_DEVICES=0,1", "MEADOWRUN_WORKER=stale", "HOME=/root"}, nil, driver.WorkerSpec{Name: "w1"}, []int{1})
	if !slices.Contains(env, "CUDA_VISIBLE_DEVICES=1") || slices.Contains(env, "CUDA_VISIBLE_DEVICES=0,1") || slices.Contains(env, "MEADOWRUN_WORKER=stale") {
		t.Fatalf("worker environment %v: want only GPU 1 visible and no inherited worker variables", env)
	}
	env = workerEnv(nil, nil, driver.WorkerSpec{Name: "w2"}, nil)
	if !slices.Contains(env, "CUDA_VISIBLE_DEVICES=") {
		t.Fatalf("a worker without GPUs must see none: %v", env)
	}
}

func TestMemoryAndCPUAdmission(t *testing.T) {
	h := fakeHost(t.TempDir())
	big := driver.Resources{LogicalCPU: 1, MemoryBytes: 6 << 30}
	if _, err := h.reserve(big); err != nil {
		t.Fatal(err)
	}
	if _, err := h.reserve(big); !errors.Is(err, driver.ErrNoCapacity) || !strings.Contains(err.Error(), "booked") {
		t.Fatalf("a second 6 GiB worker on 8 GiB: %v, want ErrNoCapacity", err)
	}
	if _, err := h.reserve(driver.Resources{LogicalCPU: 3, MemoryBytes: 1 << 30}); err != nil {
		t.Fatalf("what still fits was refused: %v", err)
	}
	if _, err := h.reserve(driver.Resources{LogicalCPU: 0.5}); !errors.Is(err, driver.ErrNoCapacity) {
		t.Fatalf("a fifth CPU on four: %v, want ErrNoCapacity", err)
	}
}

// GPUs are given to one worker at a time across processes: the lock of a
// GPU given by one host (standing for another process) or held by another
// process keeps it from being given again until released.
func TestGPUsAreNotSharedWithOtherProcesses(t *testing.T) {
	dir := t.TempDir()
	a, b := fakeHost(dir), fakeHost(dir)
	r := driver.Resources{LogicalCPU: 1, GPUs: 1}
	ga, err := a.reserve(r)
	if err != nil {
		t.Fatal(err)
	}
	gb, err := b.reserve(r)
	if err != nil || len(gb) != 1 || gb[0] == ga[0] {
		t.Fatalf("second host got %v, %v; want the GPU the first did not take (it has %v)", gb, err, ga)
	}
	if _, err := b.reserve(r); !errors.Is(err, driver.ErrNoCapacity) || !strings.Contains(err.Error(), "other processes") {
		t.Fatalf("every GPU taken by one host or the other: %v, want ErrNoCapacity", err)
	}
	a.release(r, ga, nil)
	if gc, err := b.reserve(r); err != nil || !slices.Equal(gc, ga) {
		t.Fatalf("after the first host released its GPU: %v, %v; want %v", gc, err, ga)
	}

	// A real other process: flock(1) holds the big GPU's lock. It waits
	// for the lock (no -n): the host below may hold it for a moment
	// while flock(1) starts.
	dir = t.TempDir()
	cmd := exec.Command("flock", "-o", filepath.Join(dir, "GPU-big.lock"), "sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1) (util-linux): %v", err)
	}
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	defer stop()
	h := fakeHost(dir)
	big := driver.Resources{LogicalCPU: 1, GPUs: 1, GPUMemoryBytes: 40 << 30}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := h.reserve(big)
		if errors.Is(err, driver.ErrNoCapacity) {
			break
		}
		if err == nil {
			h.release(big, []int{1}, nil)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the GPU another process holds was given: %v", err)
		}
	}
	stop()
	// flock(1) forks its command while holding the lock, and the child
	// holds the lock's file until it closes it: when the kill lands in
	// that window, the lock is released only once the (unreaped) child
	// has exited too, a moment after Wait returns.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		g, err := h.reserve(big)
		if err == nil && slices.Equal(g, []int{1}) {
			break
		}
		if err == nil || !errors.Is(err, driver.ErrNoCapacity) || time.Now().After(deadline) {
			t.Fatalf("once the other process is gone: %v, %v; want GPU 1", g, err)
		}
	}
}
