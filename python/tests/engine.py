"""The meadowrun program for the tests: $MEADOWRUN_BIN, else built from
this repository with go build; its state and caches in a temporary
directory."""

import os
import subprocess
import tempfile

_tmp = None


def setup():
    """Points MEADOWRUN_BIN, XDG_STATE_HOME and XDG_CACHE_HOME at the
    tests' own; returns the temporary directory."""
    global _tmp
    if _tmp is not None:
        return _tmp.name
    _tmp = tempfile.TemporaryDirectory(prefix="meadowrun-pytest-")
    if not os.environ.get("MEADOWRUN_BIN"):
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = os.path.join(_tmp.name, "meadowrun")
        subprocess.run(["go", "build", "-o", out, "./cmd/meadowrun"], cwd=repo, check=True)
        os.environ["MEADOWRUN_BIN"] = out
    for var in ("XDG_STATE_HOME", "XDG_CACHE_HOME"):
        d = os.path.join(_tmp.name, var.lower())
        os.makedirs(d, exist_ok=True)
        os.environ[var] = d
    os.environ.pop("MEADOWRUN_HOST", None)
    return _tmp.name


def read_env_file(path):
    """The KEY=VALUE lines of a test component's file (sshnet.env,
    containers.env) as a dict."""
    env = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            env[k] = v
    return env
