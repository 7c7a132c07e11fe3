package cli

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/testkit"
)

// The tests here run jobs: workers are this test binary re-executed.
func TestMain(m *testing.M) { testkit.Main(m) }

// cliLabel returns its argument as text: a result of the string codec.
var cliLabel = meadowrun.Register("cli.Label", func(ctx context.Context, x int) (string, error) {
	return "label " + strconv.Itoa(x), nil
})

// attach prints the results of a map whose function returns text (not
// JSON) as JSON strings, as it does a function's.
func TestAttachPrintsAMapsTextResults(t *testing.T) {
	testkit.StateDir(t)
	ctx := context.Background()
	m, err := meadowrun.SubmitMap(ctx, cliLabel, []int{1, 2}, meadowrun.Local(),
		&meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}}, &meadowrun.SubmitOptions{InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := Main(ctx, []string{"attach", "--json", m.ID()}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("attach: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{`"value":"label 1"`, `"value":"label 2"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("attach --json printed no %s:\n%s", want, out.String())
		}
	}
}
