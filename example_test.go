package meadowrun_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/meadowrun-go/meadowrun"
)

// A function that can run as a task is registered under a stable name in a
// package-level variable, so the worker (this binary, re-executed) has it
// too. main must call meadowrun.Main() first; here TestMain does.
var double = meadowrun.Register("example.Double", func(ctx context.Context, x int) (int, error) {
	if x < 0 {
		return 0, fmt.Errorf("negative input %d", x)
	}
	return 2 * x, nil
})

func ExampleRunFunction() {
	ctx := context.Background()
	y, err := meadowrun.RunFunction(ctx, double.With(21), meadowrun.Local(), nil)
	fmt.Println(y, err)
	// Output: 42 <nil>
}

func ExampleRunMap() {
	ctx := context.Background()
	ys, err := meadowrun.RunMap(ctx, double, []int{1, 2, -3, 4}, meadowrun.Local(),
		&meadowrun.MapOptions{MaxAttempts: 2})
	fmt.Println(ys)
	var me *meadowrun.MapError
	if errors.As(err, &me) {
		for _, f := range me.Failed {
			fmt.Printf("task %d failed after %d attempts: %s\n", f.TaskID, f.Attempt, f.Message)
		}
	}
	// Output:
	// [2 4 0 8]
	// task 2 failed after 2 attempts: negative input -3
}

func ExampleRunMapAsCompleted() {
	ctx := context.Background()
	var lines []string
	for r := range meadowrun.RunMapAsCompleted(ctx, double, []int{10, 20, 30}, meadowrun.Local(), nil) {
		v, err := r.Result()
		lines = append(lines, fmt.Sprintf("task %d attempt %d: %d %v", r.TaskID, r.Attempt, v, err))
	}
	slices.Sort(lines) // results arrive as they complete
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// task 0 attempt 1: 20 <nil>
	// task 1 attempt 1: 40 <nil>
	// task 2 attempt 1: 60 <nil>
}

func ExampleRunCommand() {
	ctx := context.Background()
	var out strings.Builder
	done, err := meadowrun.RunCommand(ctx, []string{"sh", "-c", `echo "hello from $0"; printf 42 > "$MEADOWRUN_RESULT_FILE"`, "a command"},
		meadowrun.Local(), &meadowrun.CommandOptions{Options: meadowrun.Options{Output: &out}})
	fmt.Print(out.String())
	fmt.Println(done.ReturnCode, string(done.Result), err)
	// Output:
	// [task 0] hello from a command
	// 0 42 <nil>
}

func ExampleStartFunction() {
	ctx := context.Background()
	job, err := meadowrun.StartFunction(ctx, double.With(5), meadowrun.Local(), &meadowrun.Options{Output: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	// ... do other work; job.ID() names the job, job.Cancel() stops it.
	y, err := job.Wait(ctx)
	fmt.Println(y, err)
	// Output: 10 <nil>
}
