// Package buildid identifies a program's code cheaply: the Go build ID that
// the linker stores in the executable (a hash of its inputs), read from one
// ELF note instead of hashing the whole file.
package buildid

import (
	"crypto/sha256"
	"debug/elf"
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

func goBuildID(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		return "", fmt.Errorf("buildid: no Go build ID note in %s", path)
	}
	note, err := s.Data()
	if err != nil {
		return "", err
	}
	// An ELF note: namesz, descsz, type (4 bytes each), the name padded to
	// 4 bytes ("Go\x00\x00"), then the description: the build ID.
	if len(note) < 16 {
		return "", fmt.Errorf("buildid: short note")
	}
	bo := f.ByteOrder
	namesz, descsz := bo.Uint32(note[0:]), bo.Uint32(note[4:])
	off := 12 + (namesz+3)&^3
	if uint64(off)+uint64(descsz) > uint64(len(note)) {
		return "", fmt.Errorf("buildid: malformed note")
	}
	return string(note[off : off+descsz]), nil
}
