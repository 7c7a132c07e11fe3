package sysres

import (
	"os"
	"path/filepath"
	"testing"
)

func TestGroupsOfDeadProcessesAreSweptAway(t *testing.T) {
	lim, err := NewLimiter(LimiterOptions{Force: KindCgroup1})
	if err != nil {
		t.Skipf("cgroup v1 is not usable here: %v", err)
	}
	own := filepath.Dir(lim.(*cgroupLimiter).dir)
	lim.Close()
	// pid 2^22+1 is above the kernel's pid_max: no such process exists.
	stale := filepath.Join(own, "meadowrun-4194305-deadbeef")
	if err := os.MkdirAll(filepath.Join(stale, "w1"), 0o755); err != nil {
		t.Fatal(err)
	}
	lim, err = NewLimiter(LimiterOptions{Force: KindCgroup1})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		os.Remove(filepath.Join(stale, "w1"))
		os.Remove(stale)
		t.Fatalf("the stale group %s is still there (%v)", stale, err)
	}
}
