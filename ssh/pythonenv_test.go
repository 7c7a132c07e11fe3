package ssh_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/pyenv/pyenvtest"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
	mrssh "github.com/meadowrun-go/meadowrun/ssh"
)

// Environment deployments on SSH machines: each machine builds the
// environment itself, in its agent's cache, from the wheelhouse the test
// writes (the machines share this machine's file system, so find-links
// names the same directory there).

var pyEnvShout = meadowrun.Named[pyEnvName, pyEnvText]("mrtest.envfns.shout")

type pyEnvName struct {
	Name string `json:"name"`
}

type pyEnvText struct {
	Text string `json:"text"`
}

// pyEnvDeployment is PipRequirementsFile with the Python test package
// among its files and the wheelhouse as its only index.
func pyEnvDeployment(t *testing.T, requirements, python string) meadowrun.Deployment {
	t.Helper()
	wheels := pyenvtest.TempWheelhouse(t)
	req := t.TempDir() + "/requirements.txt"
	writeReq(t, req, requirements)
	return meadowrun.PipRequirementsFile(req, python).
		WithPipOptions(meadowrun.PipOptions{NoIndex: true, FindLinks: []string{wheels}}).
		WithEnv(map[string]string{"PYTHONPATH": "testdata/py", "PYTHONDONTWRITEBYTECODE": "1"}).
		WithGlobs("testdata/py/mrtest/*.py")
}

func TestSSHMachinesBuildTheirOwnEnvironments(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSH(t, n, mrssh.Options{}, "h1", "h2")
	o := pyOptions(t, h)
	o.Deployment = pyEnvDeployment(t, "mrshout==1.0\nmrgreet==1.0\n", "")
	// The machines' homes outlive a test: count what this one adds.
	count := func(m string) string {
		return strings.TrimSpace(n.Run(t, m, `ls -d "$HOME"/.cache/meadowrun/envs/*/.meadowrun-ready 2>/dev/null | wc -l`))
	}
	before := map[string]string{"h1": count("h1"), "h2": count("h2")}
	args := make([]pyEnvName, 8)
	for i := range args {
		args[i] = pyEnvName{Name: string(rune('a' + i))}
	}
	got, err := meadowrun.RunMap(context.Background(), pyEnvShout, args, h, &meadowrun.MapOptions{Options: *o, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if want := "HELLO, " + strings.ToUpper(args[i].Name) + " (MRGREET 1.0)!"; r.Text != want {
			t.Fatalf("task %d = %q, want %q", i, r.Text, want)
		}
	}
	for _, m := range []string{"h1", "h2"} {
		b, _ := strconv.Atoi(before[m])
		if a, _ := strconv.Atoi(count(m)); a != b+1 {
			t.Errorf("machine %s went from %d to %d ready environments, want one more (each machine builds its own, once)", m, b, a)
		}
	}
}

func TestSSHEnvironmentsThatCannotBeBuiltSayWhy(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSH(t, n, mrssh.Options{}, "h1", "h2")
	tests := []struct {
		name         string
		requirements string
		python       string
		kind         error
		want         []string
	}{
		{"requirements pip cannot resolve fail at once, quoting pip", "nosuchpackage==1.2\n", "",
			meadowrun.ErrEnvironment, []string{"No matching distribution found for nosuchpackage==1.2"}},
		{"a Python version no machine has names the machines and the versions", "mrgreet\n", "3.99",
			meadowrun.ErrUnsupported, []string{"needs Python 3.99", "is Python 3.", n.Hosts["h1"], n.Hosts["h2"]}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := pyOptions(t, h)
			o.Deployment = pyEnvDeployment(t, tc.requirements, tc.python)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, err := meadowrun.RunFunction(ctx, pyEnvShout.With(pyEnvName{"x"}), h, o)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("error = %v, want %v", err, tc.kind)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			t.Log(err)
		})
	}
}

func writeReq(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSSHDetachedFunctionBuildsItsEnvironmentOnTheMachine(t *testing.T) {
	n, ctx := openDetached(t)
	h := newSSH(t, n, mrssh.Options{}, "h1")
	o := pyOptions(t, h)
	o.Deployment = pyEnvDeployment(t, "mrshout==1.0\nmrgreet==2.0\n", "")
	f, err := meadowrun.SubmitFunction(ctx, pyEnvShout.With(pyEnvName{"far"}), h, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if got := attachWait[pyEnvText](t, ctx, f.ID()); got.Text != "HELLO, FAR (MRGREET 2.0)!" {
		t.Fatalf("the detached function returned %q", got.Text)
	}
}
