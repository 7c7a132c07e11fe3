// Package pyworker ships meadowrun's Python worker inside the Go program:
// the worker is one Python file (standard library only, Python 3.8 or
// later) that speaks the worker protocol (docs/protocol.md). Path writes it,
// content-addressed, to a cache directory, so that an interpreter can run
// it as a script.
package pyworker

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// Script is the Python worker's source.
//
//go:embed meadowrun_worker.py
var Script []byte

// FileName is the name the worker is written under.
const FileName = "meadowrun_worker.py"

// Digest is the sha256 of Script in hex: the name of the directory Path
// writes it to, and what the worker reports in its Hello.
func Digest() string {
	sum := sha256.Sum256(Script)
	return hex.EncodeToString(sum[:])
}

// Path returns the path of the worker script under cacheDir, writing it
// there first when it is not already: cacheDir/python-worker/DIGEST/
// meadowrun_worker.py. The write is atomic (a temporary file renamed), so
// concurrent callers and processes never see a partial script. An empty
// cacheDir means DefaultCacheDir.
func Path(cacheDir string) (string, error) {
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	dir := filepath.Join(cacheDir, "python-worker", Digest())
	p := filepath.Join(dir, FileName)
	if b, err := os.ReadFile(p); err == nil && string(b) == string(Script) {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("pyworker: %w", err)
	}
	f, err := os.CreateTemp(dir, ".worker-*")
	if err != nil {
		return "", fmt.Errorf("pyworker: %w", err)
	}
	_, werr := f.Write(Script)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(f.Name(), 0o644)
	}
	if werr == nil {
		werr = os.Rename(f.Name(), p)
	}
	if werr != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("pyworker: writing %s: %w", p, werr)
	}
	return p, nil
}

// DefaultCacheDir is meadowrun's directory in the user's cache directory
// ($XDG_CACHE_HOME or ~/.cache), or in the temporary directory when there
// is none.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "meadowrun")
	}
	return filepath.Join(os.TempDir(), "meadowrun")
}
