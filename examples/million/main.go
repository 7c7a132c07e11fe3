// Command million maps a trivial function over a million arguments from an
// iterator and prints the throughput and this process's peak memory.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun"
)

var inc = meadowrun.Register("million.Inc", func(ctx context.Context, x int) (int, error) { return x + 1, nil })

func main() {
	meadowrun.Main()
	n := 1_000_000
	seq := func(yield func(int) bool) {
		for i := range n {
			if !yield(i) {
				return
			}
		}
	}
	start := time.Now()
	count := 0
	for r := range meadowrun.RunMapSeq(context.Background(), inc, seq, nil, &meadowrun.MapOptions{Options: meadowrun.Options{Output: io.Discard}, Concurrency: 2}) {
		if r.Err != nil {
			log.Fatal(r.Err)
		}
		count++
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("%d tasks in %s: %.0f tasks/s, client peak RSS %d MB\n", count, time.Since(start).Round(time.Millisecond), float64(count)/time.Since(start).Seconds(), ru.Maxrss/1024)
}
