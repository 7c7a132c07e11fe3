package pyenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
)

// Version returns the version of the Python interpreter python
// ("3.11.2").
func Version(ctx context.Context, python string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])").CombinedOutput()
	if err != nil {
		if o := strings.TrimSpace(string(out)); o != "" {
			err = fmt.Errorf("%w: %s", err, o)
		}
		return "", fmt.Errorf("pyenv: running the Python interpreter %s: %w", python, err)
	}
	v := strings.TrimSpace(string(out))
	if strings.Count(v, ".") != 2 {
		return "", fmt.Errorf("pyenv: %s says its version is %q", python, v)
	}
	return v, nil
}

// VersionMatches reports whether the version have ("3.11.2") is the
// version want: "" matches any, "3.11" any 3.11, "3.11.2" only itself.
func VersionMatches(want, have string) bool {
	if want == "" {
		return true
	}
	return have == want || strings.HasPrefix(have, want+".")
}

// MinorVersion is version without its micro part: "3.11" of "3.11.2".
func MinorVersion(version string) string {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return version
	}
	return parts[0] + "." + parts[1]
}

// CheckVersion refuses a version that is not a Python 3 version of two or
// three numbers ("" is allowed: any version).
func CheckVersion(v string) error {
	if v == "" {
		return nil
	}
	parts := strings.Split(v, ".")
	ok := len(parts) >= 2 && len(parts) <= 3 && parts[0] == "3"
	for _, p := range parts {
		ok = ok && p != "" && strings.Trim(p, "0123456789") == ""
	}
	if !ok {
		return fmt.Errorf("pyenv: Python version %q: want a version like 3.11 or 3.11.2", v)
	}
	return nil
}

// FindPython returns an interpreter of this machine's PATH of version
// want (see VersionMatches), and its version: python3.X for want 3.X or
// 3.X.Y, or python3. Without one, the error wraps driver.ErrUnsupported
// and says which version is needed and which were found.
func FindPython(ctx context.Context, want string) (string, string, error) {
	names := []string{"python3"}
	if want != "" {
		names = []string{"python" + MinorVersion(want), "python3"}
	}
	seen := map[string]bool{}
	var found []string
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			found = append(found, fmt.Sprintf("no %s", name))
			continue
		}
		if real, err := filepath.EvalSymlinks(p); err == nil && seen[real] {
			continue
		} else if err == nil {
			seen[real] = true
		}
		v, err := Version(ctx, p)
		if err != nil {
			found = append(found, fmt.Sprintf("%s (%s) does not run: %v", name, p, err))
			continue
		}
		if VersionMatches(want, v) {
			return p, v, nil
		}
		found = append(found, fmt.Sprintf("%s (%s) is Python %s", name, p, v))
	}
	need := "Python 3"
	if want != "" {
		need = "Python " + want
	}
	return "", "", fmt.Errorf("pyenv: the environment needs %s, which this machine does not have (%w): %s in its PATH (%s); "+
		"install %s there, or ask for a version the machine has",
		need, driver.ErrUnsupported, strings.Join(found, "; "), os.Getenv("PATH"), need)
}

// FindConda returns the conda program: conda itself when it is a path or
// a name found in PATH, otherwise $CONDA_EXE, otherwise conda in PATH.
// Without one, the error wraps driver.ErrUnsupported and says to install
// conda.
func FindConda(conda string) (string, error) {
	if conda == "" {
		conda = os.Getenv("CONDA_EXE")
	}
	if conda == "" {
		conda = "conda"
	}
	p, err := exec.LookPath(conda)
	if err != nil {
		return "", fmt.Errorf("conda is not installed on this machine (%w): %s is not in its PATH (%s): "+
			"install Miniconda or Miniforge there (or set CONDA_EXE to its conda)", driver.ErrUnsupported, conda, os.Getenv("PATH"))
	}
	return p, nil
}
