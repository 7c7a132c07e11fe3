package sshhost

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/agent"
	"github.com/meadowrun-go/meadowrun/internal/buildid"
)

// binary is a program to ship, identified by its content.
type binary struct {
	path   string
	sha    string
	size   int64
	digest string // Go build ID, checked by the worker handshake
}

func (b *binary) open() (io.ReadCloser, error) { return os.Open(b.path) }

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// goPlatform maps uname -s and -m to GOOS/GOARCH.
func goPlatform(sys, machine string) (string, error) {
	goos := strings.ToLower(strings.TrimSpace(sys))
	switch goos {
	case "linux", "darwin", "freebsd", "openbsd", "netbsd":
	default:
		return "", fmt.Errorf("unsupported operating system %q (meadowrun's agent runs on Linux and other Unix systems)", sys)
	}
	arch := map[string]string{
		"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
		"i386": "386", "i686": "386", "armv7l": "arm", "armv6l": "arm",
		"ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "loongarch64": "loong64",
		"386": "386", "arm": "arm", "loong64": "loong64",
	}[strings.TrimSpace(machine)]
	if arch == "" {
		return "", fmt.Errorf("unsupported architecture %q", machine)
	}
	return goos + "/" + arch, nil
}

// elfMachines are the ELF machine types of Linux platforms, to refuse a
// binary built for another.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM,
	"ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV, "loong64": elf.EM_LOONGARCH,
}

// checkPlatform verifies that path is an executable for platform.
func checkPlatform(path, platform string) error {
	goos, goarch, _ := strings.Cut(platform, "/")
	if goos != "linux" {
		return nil
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not a Linux executable: %w", path, err)
	}
	defer f.Close()
	if want, ok := elfMachines[goarch]; ok && f.Machine != want {
		return fmt.Errorf("%s is built for %s, not for %s", path, strings.TrimPrefix(f.Machine.String(), "EM_"), platform)
	}
	return nil
}

// binaries finds the program to ship for each platform.
type binaries struct {
	self     string
	explicit map[string]string

	mu    sync.Mutex
	byPlt map[string]*binary
	errs  map[string]error
	tmp   string
}

func newBinaries(self string, explicit map[string]string) (*binaries, error) {
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("ssh host: finding this program's executable: %w", err)
		}
	}
	for plt, p := range explicit {
		goos, goarch, ok := strings.Cut(plt, "/")
		if _, err := goPlatform(goos, goarch); err != nil || !ok {
			return nil, fmt.Errorf("ssh host: Binaries key %q: want GOOS/GOARCH", plt)
		}
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("ssh host: binary for %s: %w", plt, err)
		}
	}
	return &binaries{self: self, explicit: explicit, byPlt: map[string]*binary{}, errs: map[string]error{}}, nil
}

func (b *binaries) selfDigest() string {
	d, _ := buildid.Of(b.self)
	return d
}

// get returns the program for platform, cross-compiling it when needed.
func (b *binaries) get(ctx context.Context, platform string) (*binary, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bin := b.byPlt[platform]; bin != nil {
		return bin, nil
	}
	if err := b.errs[platform]; err != nil {
		return nil, err
	}
	path, err := b.pathFor(ctx, platform)
	if err == nil {
		err = checkPlatform(path, platform)
	}
	var bin *binary
	if err == nil {
		bin, err = describe(path)
	}
	if err != nil {
		b.errs[platform] = err
		return nil, err
	}
	b.byPlt[platform] = bin
	return bin, nil
}

func describe(path string) (*binary, error) {
	sha, size, err := hashFile(path)
	if err != nil {
		return nil, err
	}
	digest, err := buildid.Of(path)
	if err != nil {
		return nil, err
	}
	return &binary{path: path, sha: sha, size: size, digest: digest}, nil
}

func (b *binaries) pathFor(ctx context.Context, platform string) (string, error) {
	if p, ok := b.explicit[platform]; ok {
		return p, nil
	}
	if platform == runtime.GOOS+"/"+runtime.GOARCH {
		return b.self, nil
	}
	return b.crossCompile(ctx, platform)
}

// crossCompile builds this program for platform from its source, which
// works when the program runs from its module (go run, go build in the
// module directory) and the go command is installed.
func (b *binaries) crossCompile(ctx context.Context, platform string) (string, error) {
	here := runtime.GOOS + "/" + runtime.GOARCH
	how := fmt.Sprintf("build it with GOOS=%s GOARCH=%s go build and name it in the SSH host's Binaries[%q]",
		strings.Split(platform, "/")[0], strings.Split(platform, "/")[1], platform)
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Path == "" || strings.HasSuffix(bi.Path, ".test") || bi.Path == "command-line-arguments" {
		return "", fmt.Errorf("this program is %s and cannot be rebuilt for %s from here (no main package path in its build information): %s", here, platform, how)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("this program is %s and cannot be rebuilt for %s: the go command is not installed: %s", here, platform, how)
	}
	if b.tmp == "" {
		if b.tmp, err = os.MkdirTemp("", "meadowrun-cross-"); err != nil {
			return "", err
		}
	}
	out := filepath.Join(b.tmp, strings.ReplaceAll(platform, "/", "_"))
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, bi.Path)
	goos, goarch, _ := strings.Cut(platform, "/")
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("this program is %s; rebuilding %s for %s failed (%w): %s; %s", here, bi.Path, platform, err, strings.TrimSpace(string(msg)), how)
	}
	return out, nil
}

func (b *binaries) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

// fileRef is one deployment file with its digest.
type fileRef struct {
	agent.File
	local string
	size  int64
}

func (f fileRef) open() (io.ReadCloser, error) { return os.Open(f.local) }

// agentFiles are the files of refs as the agent's protocol names them.
func agentFiles(refs []fileRef) []agent.File {
	out := make([]agent.File, len(refs))
	for i, f := range refs {
		out[i] = f.File
	}
	return out
}

// fileCache remembers digests of local files while they are unchanged.
type fileCache struct {
	mu   sync.Mutex
	seen map[string]cachedFile
}

type cachedFile struct {
	size  int64
	mtime time.Time
	sha   string
}

func newFileCache() *fileCache { return &fileCache{seen: map[string]cachedFile{}} }

func (c *fileCache) refs(paths []string) ([]fileRef, error) {
	refs := make([]fileRef, 0, len(paths))
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("ssh host: deployment file: %w", err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		c.mu.Lock()
		cf, ok := c.seen[p]
		c.mu.Unlock()
		if !ok || cf.size != st.Size() || !cf.mtime.Equal(st.ModTime()) {
			sha, _, err := hashFile(p)
			if err != nil {
				return nil, fmt.Errorf("ssh host: deployment file: %w", err)
			}
			cf = cachedFile{size: st.Size(), mtime: st.ModTime(), sha: sha}
			c.mu.Lock()
			c.seen[p] = cf
			c.mu.Unlock()
		}
		rel := filepath.ToSlash(filepath.Clean(p))
		if filepath.IsAbs(p) || !filepath.IsLocal(p) {
			return nil, errors.New("ssh host: deployment file " + p + " is not under the working directory")
		}
		refs = append(refs, fileRef{File: agent.File{Path: rel, SHA: cf.sha, Mode: uint32(st.Mode().Perm())}, local: p, size: cf.size})
	}
	return refs, nil
}
