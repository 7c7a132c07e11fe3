package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSweepRemovesWhatWasNotUsedForTheTTL(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	sha := func(c string) string { return strings.Repeat(c, 64) }
	put := func(rel string, age time.Duration) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("0123456789"), 0o400); err != nil {
			t.Fatal(err)
		}
		old := now.Add(-age)
		for q := p; q != dir; q = filepath.Dir(q) {
			os.Chtimes(q, old, old)
		}
		return p
	}
	const day = 24 * time.Hour
	oldBin := put("bin/"+sha("a"), 30*day)
	newBin := put("bin/"+sha("b"), day)
	runningBin := put("bin/"+sha("c"), 30*day)
	oldFile := put("files/"+sha("d"), 15*day)
	newFile := put("files/"+sha("e"), 13*day)
	oldTree := put("deploy/"+sha("f")+"/sub/x.txt", 20*day)
	abandoned := put("bin/"+sha("g")+".up123", 2*time.Hour)
	uploading := put("files/.put-42", time.Minute)
	// The agent of sha("c") runs: this process stands for it.
	os.WriteFile(filepath.Join(dir, "agent-"+idOf(sha("c"))+"-m1.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	// One whose process is gone does not protect its program.
	os.WriteFile(filepath.Join(dir, "agent-"+idOf(sha("a"))+"-m1.pid"), []byte("999999999\n"), 0o600)
	// One of another machine sharing the directory might run: it does.
	otherBin := put("bin/"+sha("9"), 30*day)
	os.WriteFile(filepath.Join(dir, "agent-"+idOf(sha("9"))+"-m2.pid"), []byte("999999999\n"), 0o600)

	n, freed, err := sweep(dir, "m1", 14*day, now)
	if err != nil {
		t.Fatal(err)
	}
	gone := []string{oldBin, oldFile, filepath.Join(dir, "deploy", sha("f")), abandoned}
	kept := []string{newBin, runningBin, otherBin, newFile, uploading}
	for _, p := range gone {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s was kept", p)
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	if _, err := os.Stat(oldTree); !os.IsNotExist(err) {
		t.Errorf("the old tree's file was kept")
	}
	if n != len(gone) || freed != int64(10*len(gone)) {
		t.Errorf("sweep = %d entries, %d bytes; want %d, %d", n, freed, len(gone), 10*len(gone))
	}
	// A use marks an entry: the 13-day-old file then survives a sweep of
	// what is older than 10 days.
	markUsed(newFile)
	if n, _, _ := sweep(dir, "m1", 10*day, now); n != 0 {
		t.Errorf("a sweep right after a use removed %d entries", n)
	}
	if _, err := os.Stat(newFile); err != nil {
		t.Errorf("the file just used was removed: %v", err)
	}
}
