package agentclient

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

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/buildid"
)

// Program is a program to ship to machines and run as their agent and
// workers, identified by its content.
type Program struct {
	// Path is the program's file here.
	Path string
	// SHA is the sha256 of its content, hex: its name on the machines.
	SHA string
	// Size is its length in bytes.
	Size int64
	// Digest is its Go build ID, which its workers report.
	Digest string
	// Platform is the GOOS/GOARCH it runs on.
	Platform string
}

// Open opens the program's file for reading.
func (b *Program) Open() (io.ReadCloser, error) { return os.Open(b.Path) }

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

// GoPlatform maps uname -s and -m to GOOS/GOARCH.
func GoPlatform(sys, machine string) (string, error) {
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

// Programs finds the program to ship for each platform: this program for
// its own platform, a program named for the platform, or this program
// cross-compiled.
type Programs struct {
	self     string
	explicit map[string]string

	mu    sync.Mutex
	byPlt map[string]*Program
	errs  map[string]error
	tmp   string
}

// NewPrograms ships self ("" for the running program) to machines of its
// platform and explicit["GOOS/GOARCH"] to those of others; kind ("ssh
// host") prefixes its errors.
func NewPrograms(kind, self string, explicit map[string]string) (*Programs, error) {
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("%s: finding this program's executable: %w", kind, err)
		}
	}
	for plt, p := range explicit {
		goos, goarch, ok := strings.Cut(plt, "/")
		if _, err := GoPlatform(goos, goarch); err != nil || !ok {
			return nil, fmt.Errorf("%s: Binaries key %q: want GOOS/GOARCH", kind, plt)
		}
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s: binary for %s: %w", kind, plt, err)
		}
	}
	return &Programs{self: self, explicit: explicit, byPlt: map[string]*Program{}, errs: map[string]error{}}, nil
}

// Close removes the programs cross-compiled for other platforms.
func (b *Programs) Close() { b.close() }

// SelfDigest is the build ID of this machine's program, which workers
// started from it report.
func (b *Programs) SelfDigest() string { return b.selfDigest() }

func (b *Programs) selfDigest() string {
	d, _ := buildid.Of(b.self)
	return d
}

// For returns the program for platform (GOOS/GOARCH), cross-compiling it
// when needed.
func (b *Programs) For(ctx context.Context, platform string) (*Program, error) {
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
	var bin *Program
	if err == nil {
		bin, err = describe(path, platform)
	}
	if err != nil {
		b.errs[platform] = err
		return nil, err
	}
	b.byPlt[platform] = bin
	return bin, nil
}

func describe(path, platform string) (*Program, error) {
	sha, size, err := hashFileCached(path)
	if err != nil {
		return nil, err
	}
	digest, err := buildid.Of(path)
	if err != nil {
		return nil, err
	}
	return &Program{Path: path, SHA: sha, Size: size, Digest: digest, Platform: platform}, nil
}

func (b *Programs) pathFor(ctx context.Context, platform string) (string, error) {
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
func (b *Programs) crossCompile(ctx context.Context, platform string) (string, error) {
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

func (b *Programs) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

// fileRef is one deployment file with its digest.
type fileRef struct {
	agentproto.File
	local string
	size  int64
}

func (f fileRef) open() (io.ReadCloser, error) { return os.Open(f.local) }

// agentFiles are the files of refs as the agent's protocol names them.
func agentFiles(refs []fileRef) []agentproto.File {
	out := make([]agentproto.File, len(refs))
	for i, f := range refs {
		out[i] = f.File
	}
	return out
}

// fileCache remembers digests of local files while they are unchanged.
type fileCache struct {
	kind string // prefixes errors

	mu   sync.Mutex
	seen map[string]cachedFile
}

type cachedFile struct {
	size  int64
	mtime time.Time
	sha   string
}

func newFileCache(kind string) *fileCache {
	return &fileCache{kind: kind, seen: map[string]cachedFile{}}
}

// refs describes files by content: paths name them relative to dir (""
// for the working directory) and where they go on the machine.
func (c *fileCache) refs(dir string, paths []string) ([]fileRef, error) {
	refs := make([]fileRef, 0, len(paths))
	for _, name := range paths {
		// name is where the file goes; p where it is here.
		p := name
		if dir != "" {
			p = filepath.Join(dir, name)
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: deployment file: %w", c.kind, err)
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
				return nil, fmt.Errorf("%s: deployment file: %w", c.kind, err)
			}
			cf = cachedFile{size: st.Size(), mtime: st.ModTime(), sha: sha}
			c.mu.Lock()
			c.seen[p] = cf
			c.mu.Unlock()
		}
		rel := filepath.ToSlash(filepath.Clean(name))
		if filepath.IsAbs(name) || !filepath.IsLocal(name) {
			return nil, errors.New(c.kind + ": deployment file " + name + " is not under the working directory")
		}
		refs = append(refs, fileRef{File: agentproto.File{Path: rel, SHA: cf.sha, Mode: uint32(st.Mode().Perm())}, local: p, size: cf.size})
	}
	return refs, nil
}
