package meadowrun

import (
	"slices"
	"testing"
)

func TestWithGlobsAddsFilesToADeployment(t *testing.T) {
	d := PreinstalledInterpreter("/usr/bin/python3", map[string]string{"K": "V"})
	g := d.WithGlobs("pkg/*.py").WithGlobs("data")
	if !slices.Equal(g.globs, []string{"pkg/*.py", "data"}) || len(d.globs) != 0 {
		t.Fatalf("globs %v (the original's %v), want both globs added to a copy", g.globs, d.globs)
	}
	if g.Kind() != "interpreter" || g.runtime() != "python" || g.key() == d.key() {
		t.Fatalf("kind %s, runtime %s; key %q, want an interpreter deployment with its own pool key", g.Kind(), g.runtime(), g.key())
	}
	// A journaled job runs with the same deployment as its submitter's.
	spec, err := specOf(&Options{Deployment: g}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if back := spec.options(nil).Deployment; back.key() != g.key() {
		t.Fatalf("journaled deployment %q, want %q", back.key(), g.key())
	}
}

func TestThePlainDeploymentKeyIsTheFormattedOne(t *testing.T) {
	for _, d := range []Deployment{{}, MirrorLocal(nil, nil)} {
		if !d.plain() || d.key() != d.formatKey() {
			t.Fatalf("deployment %+v: key %q, formatted %q (plain %v)", d, d.key(), d.formatKey(), d.plain())
		}
	}
	for _, d := range []Deployment{MirrorLocal([]string{"x"}, nil), MirrorLocal(nil, map[string]string{"A": "1"}), PreinstalledInterpreter("python3", nil)} {
		if d.plain() || d.key() == (Deployment{}).key() {
			t.Fatalf("deployment %+v shares the plain deployment's key %q", d, d.key())
		}
	}
}
