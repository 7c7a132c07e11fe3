// Package benchmain holds what the side benchmark programs of the harness
// (bench/cmd/*bench) share: their main and the median of their samples.
package benchmain

import (
	"flag"
	"fmt"
	"net"
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

// DialTimes measures the TCP round trip to addr: n connects, pause apart,
// sorted; connects that fail are left out.
func DialTimes(addr string, n int, pause time.Duration) []time.Duration {
	var rtt []time.Duration
	for range n {
		start := time.Now()
		if c, err := net.Dial("tcp", addr); err == nil {
			rtt = append(rtt, time.Since(start))
			c.Close()
		}
		time.Sleep(pause)
	}
	slices.Sort(rtt)
	return rtt
}
