package buildid

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestSelfIsTheGoBuildIDAndStable(t *testing.T) {
	a, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	b, err := Of(exe)
	if err != nil || a != b || !strings.HasPrefix(a, "go:") || len(a) < 20 {
		t.Fatalf("Self() = %q, Of(exe) = %q, %v", a, b, err)
	}
}

func TestTheBuildIDIsTheOneTheGoToolReports(t *testing.T) {
	exe, _ := os.Executable()
	out, err := exec.Command("go", "tool", "buildid", exe).Output()
	if err != nil {
		t.Skipf("go tool buildid: %v", err)
	}
	id, err := Of(exe)
	if err != nil || id != "go:"+strings.TrimSpace(string(out)) {
		t.Fatalf("Of(%s) = %q, %v; go tool buildid says %q", exe, id, err, out)
	}
}

func TestAFileWithoutABuildIDIsHashed(t *testing.T) {
	p := t.TempDir() + "/script"
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	id, err := Of(p)
	sum := sha256.Sum256([]byte("#!/bin/sh\n"))
	if err != nil || id != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("Of(script) = %q, %v", id, err)
	}
}
