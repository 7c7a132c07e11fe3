// Package registry holds the functions a process can run as tasks, in a
// type-erased form: a stable name, the names of the argument and result
// types, the codec, and a call that takes and returns encoded bytes.
package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// ErrDuplicate is returned when a name is registered twice.
var ErrDuplicate = errors.New("meadowrun: function name already registered")

// Call runs a function on an encoded argument and returns the encoded
// result. A failure returns a status other than wire.StatusOK and a Failure.
type Call func(ctx context.Context, arg []byte) ([]byte, wire.Status, *wire.Failure)

// Entry is one registered function.
type Entry struct {
	wire.Function
	Call Call
}

// Registry maps stable names to functions. It is safe for concurrent use.
type Registry struct {
	mu sync.RWMutex
	m  map[string]*Entry
}

// New returns an empty Registry.
func New() *Registry { return &Registry{m: map[string]*Entry{}} }

// Default is the registry that meadowrun.Register fills and that worker
// processes serve.
var Default = New()

// Add registers e. It fails with ErrDuplicate when the name is taken.
func (r *Registry) Add(e *Entry) error {
	if e.Name == "" {
		return errors.New("meadowrun: a registered function needs a non-empty name")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.m[e.Name]; ok {
		return fmt.Errorf("%w: %q (func(%s) %s)", ErrDuplicate, e.Name, old.Arg, old.Result)
	}
	r.m[e.Name] = e
	return nil
}

// Lookup returns the entry registered under name.
func (r *Registry) Lookup(name string) (*Entry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.m[name]
	return e, ok
}

// Functions lists the registered functions sorted by name, as announced in
// a worker's Hello.
func (r *Registry) Functions() []wire.Function {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fs := make([]wire.Function, 0, len(r.m))
	for _, e := range r.m {
		fs = append(fs, e.Function)
	}
	slices.SortFunc(fs, func(a, b wire.Function) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return fs
}
