// Package envfile reads the KEY=VALUE files in which the test component
// scripts (scripts/sshnet.sh, scripts/containers.sh, scripts/k8s.sh)
// describe what they started.
package envfile

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Read returns the variables of the file at path. Blank lines and lines
// that start with # are skipped; any other line without = is an error.
func Read(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: malformed line %q", path, line)
		}
		vars[k] = v
	}
	return vars, sc.Err()
}
