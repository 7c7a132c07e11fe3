package tracepoint

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMarksAreRecordedOnlyOnceEnabledAndTakenInOrder(t *testing.T) {
	Mark("before")
	Markf("before %d", 1)
	if got := Take(); len(got) != 0 {
		t.Fatalf("recorded while off: %v", got)
	}
	start := time.Now()
	Enable()
	if !Enabled() {
		t.Fatal("not enabled after Enable")
	}
	Mark("one")
	Markf("two %d", 2)
	got := Take()
	if len(got) != 2 || got[0].What != "one" || got[1].What != "two 2" || got[1].At.Before(got[0].At) || got[0].At.Before(start) {
		t.Fatalf("marks: %v", got)
	}
	if again := Take(); len(again) != 0 {
		t.Fatalf("Take did not forget: %v", again)
	}
	var b bytes.Buffer
	Print(&b, start, got)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "one") || !strings.HasSuffix(lines[1], "two 2") || !strings.Contains(lines[0], " ms") {
		t.Fatalf("printed:\n%s", b.String())
	}
}
