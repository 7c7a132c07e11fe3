"""A tiny package that depends on mrgreet, for meadowrun's environment tests."""

import mrgreet

__version__ = "@VERSION@"


def shout(name):
    return mrgreet.greet(name).upper() + "!"
