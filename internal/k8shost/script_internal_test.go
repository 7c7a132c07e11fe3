package k8shost

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// The supervisor pods' shell script parses (sh -n).
func TestTheSupervisorScriptParses(t *testing.T) {
	out, err := exec.Command("sh", "-n", "-c", supervisorScript("20261204T010203-12-3", 5*time.Minute)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if n := supervisorJobName("20261204T010203-12-3"); len(n) > 63 {
		t.Fatalf("supervisor Job name %q is longer than a label value may be", n)
	}
}

// The script that places a durable job's deployment files on the jobs
// volume, run here with the volume and the agent's directory moved to
// temporary directories: the tree holds every file at its path with its
// mode, names with spaces and quotes included; content is kept once per
// sha256; a second run finds the tree made.
func TestTheDeployScriptMakesTheTree(t *testing.T) {
	vol, agent := t.TempDir(), t.TempDir()
	files := map[string]string{"data/a b.txt": "one", "it's/x.sh": "#!/bin/sh\n", "same.txt": "one"}
	modes := map[string]uint32{"data/a b.txt": 0o644, "it's/x.sh": 0o755, "same.txt": 0o600}
	var refs []agentproto.File
	for _, p := range []string{"data/a b.txt", "it's/x.sh", "same.txt"} {
		sum := sha256.Sum256([]byte(files[p]))
		sha := hex.EncodeToString(sum[:])
		if err := os.MkdirAll(filepath.Join(agent, agentproto.FileDir), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(agent, agentproto.FileDir, sha), []byte(files[p]), 0o600); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, agentproto.File{Path: p, SHA: sha, Mode: modes[p]})
	}
	script, tree := deployScript(refs)
	if !strings.HasPrefix(tree, jobsDir+"/"+agentproto.DeployDir+"/") {
		t.Fatalf("tree %q is not under the volume's deploy directory", tree)
	}
	script = strings.ReplaceAll(strings.ReplaceAll(script, jobsDir, vol), agentDir, agent)
	tree = strings.Replace(tree, jobsDir, vol, 1)
	for run := range 2 {
		cmd := exec.Command("sh", "-s")
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "deployed" {
			t.Fatalf("run %d: %v: %s", run, err, out)
		}
		for p, want := range files {
			st, err := os.Stat(filepath.Join(tree, p))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(filepath.Join(tree, p))
			if string(b) != want || uint32(st.Mode().Perm()) != modes[p] {
				t.Errorf("run %d: %s holds %q with mode %o, want %q with %o", run, p, b, st.Mode().Perm(), want, modes[p])
			}
		}
		content, _ := os.ReadDir(filepath.Join(vol, "files"))
		if len(content) != 2 {
			t.Errorf("run %d: the volume keeps %d contents, want 2 (one per sha256)", run, len(content))
		}
		trees, _ := os.ReadDir(filepath.Join(vol, agentproto.DeployDir))
		if len(trees) != 1 {
			t.Errorf("run %d: the volume has %d entries under %s, want the one tree", run, len(trees), agentproto.DeployDir)
		}
	}
}

// The reader pods' shell script parses, and their batch Job's name is a
// valid name however long the job's id.
func TestTheReaderScriptParses(t *testing.T) {
	out, err := exec.Command("sh", "-n", "-c", readerScript("20261204T010203-12-3", readerIdle(5*time.Minute))).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if n := readerName(supervisorJobName(strings.Repeat("x", 100))); len(n) > 63 {
		t.Fatalf("reader Job name %q is longer than a label value may be", n)
	}
}
