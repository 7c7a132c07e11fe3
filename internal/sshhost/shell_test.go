package sshhost

import (
	"os"
	"os/exec"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// shellCommand's quoting reaches /bin/sh intact whatever the login shell
// sshd hands it to.
func TestShellCommandWorksUnderEveryLoginShell(t *testing.T) {
	scripts := []string{
		`printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/meadowrun" "$(uname -s)" "$(uname -m)" ` + agentproto.MachineIDWords,
		`e="/nonexistent/it's here"; if test -x "$e"; then echo have; else echo "need $e"; fi; echo $(( 6 * 7 )) 'single' "double"`,
		`umask 077; t="x.up$$"; { echo a && echo b; } || { echo c; exit 1; }`,
	}
	for _, sh := range []string{"/bin/sh", "bash", "tcsh"} {
		path, err := exec.LookPath(sh)
		if err != nil {
			if os.Getenv("MEADOWRUN_REQUIRE_SSHNET") != "" {
				t.Fatalf("%s is not installed (scripts/sshnet.sh installs tcsh)", sh)
			}
			t.Logf("%s is not installed: not tried", sh)
			continue
		}
		for _, s := range scripts {
			want, err := exec.Command("/bin/sh", "-c", s).CombinedOutput()
			if err != nil {
				t.Fatalf("sh -c %q: %v\n%s", s, err, want)
			}
			got, err := exec.Command(path, "-c", shellCommand(s)).CombinedOutput()
			if err != nil || string(got) != string(want) {
				t.Errorf("%s -c shellCommand(%q):\n got %q, %v\nwant %q", sh, s, got, err, want)
			}
		}
	}
}
