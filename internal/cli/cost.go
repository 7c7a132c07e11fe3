package cli

import (
	"fmt"
	"strconv"
)

// printCost tells what a job cost, on hosts that price their workers
// (EC2): nothing when it cost nothing.
func printCost(s *streams, id string, usd float64) {
	if usd <= 0 {
		return
	}
	fmt.Fprintf(s.err, "meadowrun: job %s: cost $%s (the time its workers held their machines × the machines' price)\n", id, strconv.FormatFloat(usd, 'g', 3, 64))
}
