"""The conformance suite's functions for Python workers: the counterparts
of hosttest/funcs.go, called by the same names ("hosttest.Square"). Each
takes its argument as the Go caller encodes it: JSON values, a str for a
Go string, bytes for a []byte. Standard library only."""

import mmap
import os
import signal
import sys
import time


class customError(Exception):
    """The error Fail raises; the suite checks its name and message."""


def Square(x):
    return x * x


def Fail(msg):
    raise customError(msg)


def FailIf(x):
    if x % 7 == 3:
        raise RuntimeError("task with argument %d always fails" % x)
    return x + 1


def _first_time(a):
    """Whether this is the first attempt of the task marked by a ({"Dir",
    "ID"}), told by a marker file since attempts may run in different
    processes."""
    try:
        fd = os.open(os.path.join(a["Dir"], "marker-%d" % a["ID"]), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def FlakyOnce(a):
    if _first_time(a):
        raise RuntimeError("first attempt fails on purpose")
    return a["ID"] * 10


def Sleep(ms):
    time.sleep(ms / 1000)
    return ms


def SleepSaying(ms):
    """Says when it has slept, before it returns."""
    time.sleep(ms / 1000)
    print("slept %d ms" % ms)
    return ms


def Print(x):
    print("stdout line of %d" % x)
    print("stderr line of %d" % x, file=sys.stderr)
    return x


def Exit(code):
    print("about to exit")
    sys.exit(code)


def KillSelfOnce(a):
    if _first_time(a):
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    return a["ID"]


def Alloc(mb):
    """Holds exactly mb MiB of anonymous memory, every page touched."""
    m = mmap.mmap(-1, mb << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for i in range(0, len(m), 4096):
            m[i] = 1
        time.sleep(0.25)  # five watchdog intervals, where one is used
        return len(m) >> 20
    finally:
        m.close()


def BadResult(x):
    """A result JSON cannot encode when x is 1."""
    if x == 1:
        return object()
    return {"Fail": False}


def Echo(_):
    return 1


def EchoBytes(b):
    return b


def PID(_):
    return os.getpid()


def _count_start(directory, task):
    n = 1
    while True:
        try:
            fd = os.open(os.path.join(directory, "start-%d-%d" % (task, n)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        return n


def Crashing(a):
    """Counts its starts; task a["Culprit"] takes its worker down (exit 3,
    or SIGKILL when a["Kill"]) on its first start, or every start if
    a["Always"]."""
    n = _count_start(a["Dir"], a["ID"])
    if a["ID"] == a["Culprit"] and (a["Always"] or n == 1):
        print("task %d takes its worker down" % a["ID"])
        if a["Kill"]:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)
        os._exit(3)
    return a["ID"]


def Language(_):
    """What runs the suite's functions: proof that Python workers do."""
    return "python " + sys.version.split()[0]
