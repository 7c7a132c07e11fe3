package ec2alloc

import (
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/layering"
)

// Instance choice and the allocation table need no host: they may import
// package driver (for its Resources), the AWS SDK and the standard
// library, never the root package or another part of meadowrun.
func TestEC2AllocImportsOnlyDriverAndTheAWSSDK(t *testing.T) {
	const module = "github.com/meadowrun-go/meadowrun"
	for _, dep := range layering.Deps(t) {
		switch {
		case dep == module+"/driver", dep == module+"/internal/ec2alloc",
			strings.HasPrefix(dep, "github.com/aws/"):
		default:
			t.Errorf("internal/ec2alloc depends on %s; it may use only driver, the AWS SDK and the standard library", dep)
		}
	}
}
