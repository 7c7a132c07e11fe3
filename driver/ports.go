package driver

import (
	"strconv"
	"strings"
)

// PortRange parses a port specification of WorkerSpec.Ports: "N" or
// "N-M" with 1 ≤ N ≤ M ≤ 65535. ok is false for anything else.
func PortRange(spec string) (lo, hi int, ok bool) {
	a, b, isRange := strings.Cut(spec, "-")
	lo, err1 := strconv.Atoi(a)
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(b)
	}
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, false
	}
	return lo, hi, true
}
