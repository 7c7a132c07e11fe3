package coord

import (
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/layering"
)

// The coordinator sits below the user's API and the durable-job layer and
// above the drivers: it may import package driver, internal/wire and the
// standard library, never the root package, a host's transport, the agent
// or the journal.
func TestTheCoordinatorImportsNothingAboveIt(t *testing.T) {
	const module = "github.com/meadowrun-go/meadowrun"
	allowed := map[string]bool{
		module + "/driver":         true,
		module + "/internal/wire":  true,
		module + "/internal/coord": true,
	}
	for _, dep := range layering.Deps(t) {
		if !allowed[dep] {
			t.Errorf("internal/coord depends on %s; it may use only driver, internal/wire and the standard library", dep)
		}
	}
}
