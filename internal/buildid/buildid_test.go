package buildid

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
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

func TestAFileWithoutABuildIDIsHashed(t *testing.T) {
	p := t.TempDir() + "/script"
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	id, err := Of(p)
	sum := sha256.Sum256([]byte("#!/bin/sh\n"))
	if err != nil || id != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("Of(script) = %q, %v", id, err)
	}
}
