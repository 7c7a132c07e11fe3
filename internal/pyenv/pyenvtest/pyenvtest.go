// Package pyenvtest holds what the tests of Python environments share: a
// wheelhouse of two tiny pure-Python packages (mrgreet, and mrshout, which
// depends on mrgreet), written as wheels without setuptools, and a
// package index serving it on loopback, so that pip installs without
// PyPI.
package pyenvtest

import (
	"archive/zip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

//go:embed all:testdata
var sources embed.FS

// A Package is one wheel of the wheelhouse.
type Package struct {
	Name, Version string
	// Requires are its Requires-Dist lines.
	Requires []string
}

// Packages are the wheels Wheelhouse writes: mrgreet 1.0 and 2.0, and
// mrshout 1.0, which needs mrgreet 1.0 or later.
var Packages = []Package{
	{Name: "mrgreet", Version: "1.0"},
	{Name: "mrgreet", Version: "2.0"},
	{Name: "mrshout", Version: "1.0", Requires: []string{"mrgreet>=1.0"}},
}

// Wheelhouse writes the wheels of Packages into dir and returns dir.
func Wheelhouse(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, p := range Packages {
		if err := writeWheel(dir, p); err != nil {
			return "", fmt.Errorf("pyenvtest: wheel of %s %s: %w", p.Name, p.Version, err)
		}
	}
	return dir, nil
}

// TempWheelhouse is Wheelhouse in a temporary directory of t.
func TempWheelhouse(t testing.TB) string {
	t.Helper()
	dir, err := Wheelhouse(filepath.Join(t.TempDir(), "wheels"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// WheelName is the file name of p's wheel.
func WheelName(p Package) string {
	return fmt.Sprintf("%s-%s-py3-none-any.whl", p.Name, p.Version)
}

// writeWheel writes p's wheel: its module from testdata with @VERSION@
// replaced, and the dist-info pip reads (METADATA, WHEEL, RECORD with
// each file's hash).
func writeWheel(dir string, p Package) error {
	files := map[string][]byte{}
	root := path.Join("testdata", p.Name)
	err := fs.WalkDir(sources, root, func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := sources.ReadFile(name)
		if err != nil {
			return err
		}
		files[strings.TrimPrefix(name, root+"/")] = []byte(strings.ReplaceAll(string(b), "@VERSION@", p.Version))
		return nil
	})
	if err != nil {
		return err
	}
	info := fmt.Sprintf("%s-%s.dist-info", p.Name, p.Version)
	meta := fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: a test package of meadowrun\n", p.Name, p.Version)
	for _, r := range p.Requires {
		meta += "Requires-Dist: " + r + "\n"
	}
	files[info+"/METADATA"] = []byte(meta)
	files[info+"/WHEEL"] = []byte("Wheel-Version: 1.0\nGenerator: meadowrun-pyenvtest\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var record strings.Builder
	for _, n := range names {
		h := sha256.Sum256(files[n])
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", n, base64.RawURLEncoding.EncodeToString(h[:]), len(files[n]))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", info)
	files[info+"/RECORD"] = []byte(record.String())
	names = append(names, info+"/RECORD")

	f, err := os.Create(filepath.Join(dir, WheelName(p)))
	if err != nil {
		return err
	}
	zw := zip.NewWriter(f)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			f.Close()
			return err
		}
		if _, err := w.Write(files[n]); err != nil {
			f.Close()
			return err
		}
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Index serves the wheels of dir as a package index (PEP 503's simple
// repository API) on loopback, until the test ends, and returns its URL
// (".../simple"), for pip's --index-url.
func Index(t testing.TB, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", http.FileServer(http.Dir(dir))))
	mux.HandleFunc("/simple/{name}/", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var links []string
		for _, p := range Packages {
			if p.Name == name {
				links = append(links, fmt.Sprintf(`<a href="/files/%s">%s</a>`, WheelName(p), WheelName(p)))
			}
		}
		if len(links) == 0 {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "<!DOCTYPE html>\n<html><body>\n%s\n</body></html>\n", strings.Join(links, "<br>\n"))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/simple"
}
