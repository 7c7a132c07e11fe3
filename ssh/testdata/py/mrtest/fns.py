"""Functions the SSH tests run on Python workers of SSH machines, copied
there with the deployment's files. Each takes its JSON argument as its
single positional argument."""

import os
import sys


def square(x):
    return x * x


def where(_):
    """Where the worker runs and where this module was imported from."""
    return {
        "ssh_connection": os.environ.get("SSH_CONNECTION", ""),
        "cwd": os.getcwd(),
        "module": os.path.abspath(__file__),
        "python": "%d.%d.%d" % sys.version_info[:3],
    }


def fails(arg):
    raise ValueError(arg["message"])


class NotFound(Exception):
    pass


def fails_custom(arg):
    raise NotFound(arg["message"])


def prints(x):
    print("hello from", x)
    print("to stderr", x, file=sys.stderr)
    return x
