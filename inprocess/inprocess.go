// Package inprocess is a meadowrun host whose workers are goroutines of
// this process, speaking the real worker protocol over in-memory pipes. It
// is meant for tests: fast, but it cannot enforce memory (a memory request
// is refused), capture what functions print, or survive a crashing task.
package inprocess

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/inprocess"
)

// Importing the package registers the inprocess:// scheme of
// meadowrun.OpenHost: inprocess://?cpu=N.
func init() { meadowrun.RegisterHostScheme("inprocess", open) }

func open(ctx context.Context, u *url.URL) (*meadowrun.Host, error) {
	cpu := 0.0
	for k, vs := range u.Query() {
		v, err := strconv.ParseFloat(vs[len(vs)-1], 64)
		if k != "cpu" || err != nil || v <= 0 {
			return nil, fmt.Errorf("inprocess:// takes one parameter, cpu=N with N a positive number, not %s=%q", k, vs[len(vs)-1])
		}
		cpu = v
	}
	return NewHost(cpu), nil
}

// NewHost returns a host offering logicalCPU CPUs (0: the number of CPUs of
// the machine). Close it when done.
func NewHost(logicalCPU float64) *meadowrun.Host {
	return meadowrun.NewHost(inprocess.New(logicalCPU), meadowrun.HostOptions{})
}
