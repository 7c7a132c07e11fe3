// Package buildid identifies a program's code cheaply: the Go build ID that
// the linker stores in the executable (a hash of its inputs), read from one
// ELF note instead of hashing the whole file.
package buildid

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
)

var self = sync.OnceValues(func() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return Of(exe)
})

// Self returns the identity of the running executable, computed once.
func Self() (string, error) { return self() }

// Of returns the identity of the executable at path: "go:" and its Go build
// ID when it has one, otherwise "sha256:" and the hash of its contents.
func Of(path string) (string, error) {
	if id, err := goBuildID(path); err == nil && id != "" {
		return "go:" + id, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("buildid: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("buildid: hashing %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// goBuildID reads the Go build ID from the ELF note the linker puts in
// the executable's first page ("Go\x00\x00" note of type 4), without
// parsing the whole file, so that a worker's start-up stays cheap.
func goBuildID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF {
		return "", err
	}
	buf = buf[:n]
	le := binary.LittleEndian
	for off := 0; off < len(buf); {
		i := bytes.Index(buf[off:], []byte("Go\x00\x00"))
		if i < 0 {
			break
		}
		j := off + i
		// namesz (4), descsz, type (4) precede the name.
		if j >= 12 && le.Uint32(buf[j-12:]) == 4 && le.Uint32(buf[j-4:]) == 4 {
			size := int(le.Uint32(buf[j-8:]))
			if size > 0 && size < 1024 && j+4+size <= len(buf) {
				return string(buf[j+4 : j+4+size]), nil
			}
		}
		off = j + 1
	}
	return "", fmt.Errorf("buildid: no Go build ID note in %s", path)
}
