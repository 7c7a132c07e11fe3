"""Functions the Go tests run on Python workers. Each takes its JSON
argument as its single positional argument."""

import os
import sys
import time


def square(x):
    return x * x


def add(pair):
    return pair[0] + pair[1]


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


def pid(_):
    return os.getpid()


def unencodable(_):
    return object()


def crashing(arg):
    """Counts its starts in arg["dir"]; task arg["culprit"] exits its
    worker with os._exit(3)."""
    n = 1
    while True:
        try:
            fd = os.open(os.path.join(arg["dir"], "start-%d-%d" % (arg["id"], n)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            break
        except FileExistsError:
            n += 1
    if arg["id"] == arg["culprit"]:
        print("task %d takes its worker down" % arg["id"])
        os._exit(3)
    return arg["id"]


def allocates(mb):
    """Holds mb MiB, every page touched, and returns mb."""
    b = bytearray(mb << 20)
    for i in range(0, len(b), 4096):
        b[i] = 1
    return mb


def sleeps(seconds):
    """Says it started, with its pid, then sleeps."""
    print("sleeping pid=%d" % os.getpid())
    time.sleep(seconds)
    return seconds


def exits(code):
    """Ends its worker through sys.exit(code)."""
    sys.exit(code)


def unencodable_if(x):
    """Returns x, or an object JSON cannot encode when x is 2."""
    return object() if x == 2 else x


def always_fails(x):
    raise RuntimeError("task %d always fails" % x)


def uses_asyncio(x):
    """User code that runs its own event loop, as the reference's
    EdgeCases test does."""
    import asyncio

    async def double():
        await asyncio.sleep(0)
        return 2 * x

    return asyncio.run(double())


def shout(s):
    """Takes a Go string as a str."""
    return s.upper() + "!"


def reverse_bytes(b):
    """Takes a Go []byte as bytes and returns bytes."""
    return b[::-1]
