"""A module whose import fails: user code with a bug at import time."""

import os

VALUE = os.environ["MRTEST_SURELY_UNSET_VARIABLE"]


def f(x):
    return x
