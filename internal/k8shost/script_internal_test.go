package k8shost

import (
	"os/exec"
	"testing"
	"time"
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
