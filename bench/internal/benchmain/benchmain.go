// Package benchmain holds what the side benchmark programs of the harness
// (bench/cmd/*bench) share: their main and the median of their samples.
package benchmain

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/meadowrun-go/meadowrun"
)

// Main serves meadowrun's workers (the program re-executed), parses the
// -quick flag and runs run, exiting 1 with name and the error when it
// fails.
func Main(name string, run func(quick bool) error) {
	meadowrun.Main()
	quick := flag.Bool("quick", false, "tiny sizes")
	flag.Parse()
	if err := run(*quick); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Median returns the median of d, which it leaves as it is.
func Median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
