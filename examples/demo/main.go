// Command demo shows meadowrun on this machine: a function call, a map in
// which one task fails once and is retried, and a command.
//
//	go run ./examples/demo
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun"
)

// primeCount counts the primes below n: real work for a worker.
var primeCount = meadowrun.Register("demo.PrimeCount", func(ctx context.Context, n int) (int, error) {
	count := 0
	for i := 2; i < n; i++ {
		prime := true
		for d := 2; d*d <= i; d++ {
			if i%d == 0 {
				prime = false
				break
			}
		}
		if prime {
			count++
		}
	}
	fmt.Printf("counted %d primes below %d in worker pid %d\n", count, n, os.Getpid())
	return count, nil
})

// flaky fails the first time it sees an argument of 3 (remembered in a
// file, since a retry may run in another process), then succeeds.
type flakyArg struct {
	Dir string
	N   int
}

var flaky = meadowrun.Register("demo.Flaky", func(ctx context.Context, a flakyArg) (string, error) {
	if a.N == 3 {
		marker := filepath.Join(a.Dir, "failed-once")
		if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
			os.WriteFile(marker, nil, 0o644)
			return "", errors.New("simulated transient failure")
		}
	}
	return "item " + strconv.Itoa(a.N) + " done", nil
})

func main() {
	meadowrun.Main() // in a worker process this serves the functions above and never returns

	ctx := context.Background()
	log.SetFlags(0)
	// Workers' output, prefixed with its task, goes to stdout here so that
	// it interleaves with the demo's own lines; the default is stderr.
	out := meadowrun.Options{Output: os.Stdout}

	start := time.Now()
	n, err := meadowrun.RunFunction(ctx, primeCount.With(200000), meadowrun.Local(), &out)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("1. RunFunction: %d primes below 200000 (%s)\n\n", n, time.Since(start).Round(time.Millisecond))

	dir, err := os.MkdirTemp("", "meadowrun-demo-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	args := []flakyArg{{dir, 1}, {dir, 2}, {dir, 3}, {dir, 4}, {dir, 5}}
	fmt.Println("2. RunMapAsCompleted with MaxAttempts 2 (task 2 fails once):")
	for r := range meadowrun.RunMapAsCompleted(ctx, flaky, args, meadowrun.Local(), &meadowrun.MapOptions{Options: out, MaxAttempts: 2}) {
		v, err := r.Result()
		fmt.Printf("   task %d, attempt %d, on worker %s: %q %v\n", r.TaskID, r.Attempt, r.Worker, v, err)
	}
	fmt.Println()

	fmt.Println("3. RunCommand:")
	done, err := meadowrun.RunCommand(ctx, []string{"sh", "-c", "echo running on $(uname -sm); echo '{\"ok\":true}' > $MEADOWRUN_RESULT_FILE"}, meadowrun.Local(), &meadowrun.CommandOptions{Options: out})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("   exit code %d, result %s, log kept in %s\n", done.ReturnCode, strings.TrimSpace(string(done.Result)), done.LogFile)
}
