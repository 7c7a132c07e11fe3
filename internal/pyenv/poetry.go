package pyenv

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/meadowrun-go/meadowrun/driver"
)

// A poetry project is installed the way `poetry install --no-root`
// installs it, without poetry: every package of poetry.lock that is not
// optional (extras), pinned to its locked version and source, through
// pip.

// poetryLock is what is read of a poetry.lock.
type poetryLock struct {
	Package []struct {
		Name     string `toml:"name"`
		Version  string `toml:"version"`
		Optional bool   `toml:"optional"`
		// Markers is a string (lock format 2.1), or a table of markers
		// by group.
		Markers any `toml:"markers"`
		Source  struct {
			Type              string `toml:"type"`
			URL               string `toml:"url"`
			Reference         string `toml:"reference"`
			ResolvedReference string `toml:"resolved_reference"`
			Subdirectory      string `toml:"subdirectory"`
		} `toml:"source"`
	} `toml:"package"`
	Metadata struct {
		LockVersion string `toml:"lock-version"`
	} `toml:"metadata"`
}

// PoetryProject resolves the poetry project in dir (its poetry.lock) to a
// pip environment for Python version python ("" for the machine's
// python3).
func PoetryProject(dir, python string) (*driver.Environment, error) {
	if err := CheckVersion(python); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "poetry.lock")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pyenv: poetry project: %w (run poetry lock in the project to make it)", err)
	}
	spec, err := PoetryRequirements(b, dir)
	if err != nil {
		return nil, fmt.Errorf("pyenv: %s: %w", path, err)
	}
	return &driver.Environment{Manager: driver.ManagerPip, Spec: spec, Python: python}, nil
}

// PoetryRequirements translates the text of a poetry.lock to pinned pip
// requirements: "name==version" for packages of an index (an index other
// than PyPI becomes an --extra-index-url line), "name @ git+URL@commit"
// for git sources, "name @ URL" for archives, "name @ file://..." for
// directories and files (relative to dir, the project's directory, and
// found there on the worker's machine). Markers are kept.
func PoetryRequirements(lock []byte, dir string) (string, error) {
	var l poetryLock
	if _, err := toml.Decode(string(lock), &l); err != nil {
		return "", fmt.Errorf("not a poetry lock file: %w", err)
	}
	if len(l.Package) == 0 && l.Metadata.LockVersion == "" {
		return "", fmt.Errorf("not a poetry lock file: no [[package]] and no [metadata]")
	}
	var indexes, reqs []string
	for _, p := range l.Package {
		if p.Optional {
			continue
		}
		if p.Name == "" || p.Version == "" {
			return "", fmt.Errorf("a package without a name or version (%q %q)", p.Name, p.Version)
		}
		var req string
		switch s := p.Source; s.Type {
		case "", "legacy", "pypi":
			req = p.Name + "==" + p.Version
			if s.Type == "legacy" && s.URL != "" && !slices.Contains(indexes, s.URL) {
				indexes = append(indexes, s.URL)
			}
		case "git":
			ref := s.ResolvedReference
			if ref == "" {
				ref = s.Reference
			}
			req = fmt.Sprintf("%s @ git+%s", p.Name, s.URL)
			if ref != "" {
				req += "@" + ref
			}
			if s.Subdirectory != "" {
				req += "#subdirectory=" + s.Subdirectory
			}
		case "url":
			req = p.Name + " @ " + s.URL
		case "directory", "file":
			abs := s.URL
			if !filepath.IsAbs(abs) {
				a, err := filepath.Abs(filepath.Join(dir, s.URL))
				if err != nil {
					return "", err
				}
				abs = a
			}
			req = p.Name + " @ file://" + filepath.ToSlash(abs)
		default:
			return "", fmt.Errorf("package %s has a source of type %q, which meadowrun cannot install", p.Name, s.Type)
		}
		if m := poetryMarkers(p.Markers); m != "" {
			req += " ; " + m
		}
		reqs = append(reqs, req)
	}
	sort.Strings(reqs)
	var b strings.Builder
	b.WriteString("# pinned from poetry.lock by meadowrun\n")
	for _, u := range indexes {
		fmt.Fprintf(&b, "--extra-index-url %s\n", u)
	}
	for _, r := range reqs {
		b.WriteString(r + "\n")
	}
	return b.String(), nil
}

// poetryMarkers is a package's environment markers: the string, or the
// markers of its groups joined with "or" (a package is needed when any
// group that has it is).
func poetryMarkers(m any) string {
	switch m := m.(type) {
	case string:
		return m
	case map[string]any:
		var ms []string
		for _, v := range m {
			if s, ok := v.(string); ok && s != "" && !slices.Contains(ms, "("+s+")") {
				ms = append(ms, "("+s+")")
			}
		}
		if len(ms) < len(m) {
			return "" // a group needs it everywhere
		}
		sort.Strings(ms)
		return strings.Join(ms, " or ")
	}
	return ""
}
