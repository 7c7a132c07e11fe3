"""Functions for meadowrun's environment tests: they use the packages of
the test wheelhouse (internal/pyenv/pyenvtest), so they run only in an
environment that has them installed."""

import os
import sys


def shout(arg):
    """{"name": N} -> {"text": mrshout's shout of N}."""
    import mrshout

    return {"text": mrshout.shout(arg["name"])}


def where(_):
    """Where the worker's interpreter and packages are."""
    try:
        import mrgreet

        greet = mrgreet.__version__
    except ImportError:
        greet = None
    return {
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "executable": sys.executable,
        "python": "%d.%d.%d" % sys.version_info[:3],
        "mrgreet": greet,
        "virtual_env": os.environ.get("VIRTUAL_ENV", ""),
    }
