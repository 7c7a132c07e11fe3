package durable

import (
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/layering"
)

// The durable layer sits below the user's API and above the journal, the
// coordinator and the drivers: it never imports the root package, and it
// reaches other machines only through driver.JobKeeper, never through a
// transport or the agent client.
func TestTheDurableLayerImportsNothingAboveIt(t *testing.T) {
	const module = "github.com/meadowrun-go/meadowrun"
	forbidden := map[string]string{
		module:                           "the root package (the API above it)",
		module + "/internal/sshhost":     "a transport",
		module + "/internal/agentclient": "the agent client (reach machines through driver.JobKeeper)",
		module + "/internal/agent":       "the agent (the API wires the agent's keeper)",
		module + "/ssh":                  "a host package",
		module + "/local":                "a host package",
		module + "/inprocess":            "a host package",
	}
	for _, dep := range layering.Deps(t) {
		if why, ok := forbidden[dep]; ok {
			t.Errorf("internal/durable depends on %s, %s", dep, why)
		}
	}
}
