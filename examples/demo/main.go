// Command demo shows meadowrun on this machine: a function call, a map
// whose tasks run in parallel on several workers and one of which fails
// once and is retried, and a command.
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
	"runtime"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun"
)

// countPrimes counts the primes in [from, to).
func countPrimes(from, to int) int {
	count := 0
	for i := max(from, 2); i < to; i++ {
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
	return count
}

// primeCount counts the primes below n: real work for a worker.
var primeCount = meadowrun.Register("demo.PrimeCount", func(ctx context.Context, n int) (int, error) {
	count := countPrimes(2, n)
	fmt.Printf("counted %d primes below %d in worker pid %d\n", count, n, os.Getpid())
	return count, nil
})

// chunk is a range of numbers to count the primes of. The chunk of task
// 2 fails the first time (remembered in a file in Dir, since a retry may
// run in another process), then succeeds.
type chunk struct {
	Dir      string
	Task     int
	From, To int
}

var countChunk = meadowrun.Register("demo.CountChunk", func(ctx context.Context, c chunk) (string, error) {
	if c.Task == 2 {
		marker := filepath.Join(c.Dir, "failed-once")
		if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
			os.WriteFile(marker, nil, 0o644)
			return "", errors.New("simulated transient failure")
		}
	}
	return fmt.Sprintf("%d primes in [%d, %d) in pid %d", countPrimes(c.From, c.To), c.From, c.To, os.Getpid()), nil
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
	// Each chunk is a fraction of a second of work: while one worker
	// counts, the others start and take the next chunks.
	const chunks, width = 6, 300000
	var args []chunk
	for i := range chunks {
		args = append(args, chunk{Dir: dir, Task: i, From: i * width, To: (i + 1) * width})
	}
	fmt.Printf("2. RunMapAsCompleted, up to %d workers at once, MaxAttempts 2 (task 2 fails once):\n", runtime.NumCPU())
	start = time.Now()
	workers := map[string]bool{}
	var busy time.Duration
	opts := &meadowrun.MapOptions{Options: out, Concurrency: runtime.NumCPU(), MaxAttempts: 2}
	for r := range meadowrun.RunMapAsCompleted(ctx, countChunk, args, meadowrun.Local(), opts) {
		v, err := r.Result()
		fmt.Printf("   task %d, attempt %d, on worker %s: %s %v\n", r.TaskID, r.Attempt, r.Worker, v, err)
		workers[r.Worker] = true
		busy += r.Duration
	}
	fmt.Printf("   %d tasks on %d workers: %s of work in %s\n\n", chunks, len(workers),
		busy.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	fmt.Println("3. RunCommand:")
	done, err := meadowrun.RunCommand(ctx, []string{"sh", "-c", "echo running on $(uname -sm); echo '{\"ok\":true}' > $MEADOWRUN_RESULT_FILE"}, meadowrun.Local(), &meadowrun.CommandOptions{Options: out})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("   exit code %d, result %s, log kept in %s\n", done.ReturnCode, strings.TrimSpace(string(done.Result)), done.LogFile)
}
