package cli

import (
	"math"
	"strconv"
	"strings"
)

// gb formats a size given in the GB of the resource flags (--memory,
// --gpu-memory, --ephemeral-storage: 2^30 bytes, as meadowrun.Resources
// counts them) in that unit, with three significant digits and never an
// exponent: 23.5GB, 0.5GB, 100000GB.
func gb(g float64) string {
	if g == 0 || math.IsNaN(g) || math.IsInf(g, 0) {
		return strconv.FormatFloat(g, 'f', -1, 64) + "GB"
	}
	decimals := 0
	for v := math.Abs(g); v < 100 && decimals < 9; v *= 10 {
		decimals++
	}
	s := strconv.FormatFloat(g, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s + "GB"
}
