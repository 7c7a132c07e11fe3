package agentclient

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// A program's SHA-256 names it on the machines; hashing a 20 to 50 MB
// program takes 100 ms or more, which every new client (a process, or a
// host in a process) would pay before its first worker on a warm machine.
// The hash is kept by the file's identity (path, device, inode, size,
// modification time) in this process and in the user's cache directory,
// as build tools do: a program rewritten in place keeps none of them.

var shaMemo sync.Map // file key → hex SHA-256

// fileKey returns the identity of the file at path, or "" when it cannot
// be told.
func fileKey(path string) string {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		return ""
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s|%d|%d|%d|%d", abs, sys.Dev, sys.Ino, st.Size(), st.ModTime().UnixNano())
}

func shaCacheFile(key string) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(dir, "meadowrun", "program-sha", hex.EncodeToString(sum[:12]))
}

// hashFileCached is hashFile, remembered by the file's identity.
func hashFileCached(path string) (string, int64, error) {
	key := fileKey(path)
	if key == "" {
		return hashFile(path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", 0, err
	}
	if v, ok := shaMemo.Load(key); ok {
		return v.(string), st.Size(), nil
	}
	cf := shaCacheFile(key)
	if cf != "" {
		if b, err := os.ReadFile(cf); err == nil && len(b) == 64+1+len(key) && string(b[65:]) == key {
			if _, err := hex.DecodeString(string(b[:64])); err == nil {
				shaMemo.Store(key, string(b[:64]))
				return string(b[:64]), st.Size(), nil
			}
		}
	}
	sha, n, err := hashFile(path)
	if err != nil {
		return "", 0, err
	}
	// Still the same file: remember its hash.
	if fileKey(path) == key {
		shaMemo.Store(key, sha)
		if cf != "" && os.MkdirAll(filepath.Dir(cf), 0o700) == nil {
			tmp := fmt.Sprintf("%s.%d", cf, os.Getpid())
			if os.WriteFile(tmp, []byte(sha+"\n"+key), 0o600) == nil {
				os.Rename(tmp, cf)
			}
		}
	}
	return sha, n, nil
}
