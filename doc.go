// Package meadowrun runs a function, a command, or a map of a function over
// many inputs on compute you choose (this machine today; SSH hosts, EC2 and
// Azure VMs and Kubernetes through the same API), with the code brought
// along, resources requested in plain terms and enforced, failures
// classified and retried, and results and logs streamed back.
//
// It is the Go counterpart of the Python meadowrun library. Functions are
// registered under stable names, so that the worker (your own binary,
// re-executed) can find them:
//
//	var Square = meadowrun.Register("example.Square",
//		func(ctx context.Context, x int) (int, error) { return x * x, nil })
//
//	func main() {
//		meadowrun.Main() // serves registered functions in a worker process; returns at once otherwise
//		y, err := meadowrun.RunFunction(ctx, Square.With(7), meadowrun.Local(), nil)
//		ys, err := meadowrun.RunMap(ctx, Square, []int{1, 2, 3}, nil, &meadowrun.MapOptions{MaxAttempts: 3})
//		for r := range meadowrun.RunMapAsCompleted(ctx, Square, xs, nil, nil) { v, err := r.Result() }
//		done, err := meadowrun.RunCommand(ctx, []string{"python", "train.py"}, nil, nil)
//	}
//
// A nil Host means Local: this machine. Workers stay warm between calls in
// one process. Resources are validated before anything runs, a request that
// can never fit fails at once saying what the machine has, and memory
// limits are enforced per worker (cgroups, or an RSS watchdog). Task
// failures are *TaskError values with a Kind (error, panic, exit, crash,
// OOM, lost, encoding) and the remote error's type, message and stack; a
// map returns the results of the tasks that succeeded together with a
// *MapError listing those that did not.
//
// docs/architecture.md explains the layers; docs/protocol.md specifies the
// worker protocol.
package meadowrun
