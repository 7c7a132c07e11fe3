"""A tiny package for meadowrun's environment tests."""

__version__ = "@VERSION@"


def greet(name):
    return "hello, %s (mrgreet %s)" % (name, __version__)
