package pyenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
)

// The submitting side: each kind of Python deployment resolved to the
// driver.Environment every machine builds.

// Freeze resolves a local interpreter (a virtualenv's python, or any
// interpreter with pip) to the pip environment that re-creates it: its
// packages as `pip freeze --exclude-editable` lists them, for the same
// minor Python version.
func Freeze(ctx context.Context, python string) (*driver.Environment, error) {
	version, err := Version(ctx, python)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, python, "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check")
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("pyenv: %s -m pip freeze: %w: %s", python, err, quote(stderr.Bytes()))
	}
	return &driver.Environment{Manager: driver.ManagerPip, Spec: out.String(), Python: MinorVersion(version)}, nil
}

// RequirementsFile resolves a requirements file to a pip environment for
// Python version python ("" for the machine's python3).
func RequirementsFile(path, python string) (*driver.Environment, error) {
	if err := CheckVersion(python); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pyenv: requirements file: %w", err)
	}
	return &driver.Environment{Manager: driver.ManagerPip, Spec: string(b), Python: python}, nil
}

// CondaExport resolves a local conda environment, by name or by path
// (anything with a slash), to its `conda env export`, for the minor Python
// version the export lists. conda is FindConda's.
func CondaExport(ctx context.Context, conda, nameOrPath string) (*driver.Environment, error) {
	conda, err := FindConda(conda)
	if err != nil {
		return nil, fmt.Errorf("pyenv: exporting the conda environment %q needs conda, but %w", nameOrPath, err)
	}
	flag := "--name"
	if strings.Contains(nameOrPath, "/") {
		flag = "--prefix"
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, conda, "env", "export", flag, nameOrPath)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("pyenv: %s env export %s %s: %w: %s", conda, flag, nameOrPath, err, quote(stderr.Bytes()))
	}
	spec := NormalizeConda(out.String())
	return &driver.Environment{Manager: driver.ManagerConda, Spec: spec, Format: driver.CondaEnvExport, Python: condaPython(spec)}, nil
}

// CondaFile resolves a conda environment file, of format
// driver.CondaEnvExport or driver.CondaList ("" detects it: a file with an
// @EXPLICIT line is a list).
func CondaFile(path, format string) (*driver.Environment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pyenv: conda environment file: %w", err)
	}
	spec := NormalizeConda(string(b))
	switch format {
	case "":
		format = driver.CondaEnvExport
		for l := range strings.Lines(spec) {
			if strings.TrimSpace(l) == "@EXPLICIT" {
				format = driver.CondaList
			}
		}
	case driver.CondaEnvExport, driver.CondaList:
	default:
		return nil, fmt.Errorf("pyenv: conda file format %q: want %q, %q or \"\" (detect)", format, driver.CondaEnvExport, driver.CondaList)
	}
	return &driver.Environment{Manager: driver.ManagerConda, Spec: spec, Format: format}, nil
}

// NormalizeConda removes the top-level name: and prefix: lines of a conda
// environment file: the environment is created at a prefix of the
// machine's, and they would otherwise make one environment hash
// differently under two names.
func NormalizeConda(spec string) string {
	var b strings.Builder
	for l := range strings.Lines(spec) {
		if strings.HasPrefix(l, "name:") || strings.HasPrefix(l, "prefix:") {
			continue
		}
		b.WriteString(l)
	}
	return b.String()
}

// condaPython is the minor version of the python dependency of an
// environment export ("- python=3.11.5=h955ad1f_0"), "" when it has none.
func condaPython(spec string) string {
	for l := range strings.Lines(spec) {
		t := strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(t, "- python="); ok {
			v, _, _ = strings.Cut(v, "=")
			if CheckVersion(v) == nil {
				return MinorVersion(v)
			}
		}
	}
	return ""
}
