"""meadowrun's Python worker: the worker side of the meadowrun protocol
(docs/protocol.md, version 2) for Python functions and commands.

Standard library only (cloudpickle is used when importable, for pickled
callables); Python 3.8 or later. The host starts it as

    INTERPRETER meadowrun_worker.py

with tasks readable on fd 3, results written to fd 4, and the read end of
its own stdout/stderr socket on fd 5, in the caller's working directory,
which goes first on sys.path so that "package.module" resolves from it.

A function is named "package.module.function" (or "module.Class.method":
the longest importable prefix is the module, the rest attributes). It is
called with the task's JSON argument as its single positional argument;
its result is sent back as JSON. A name of the form "cloudpickle:BASE64"
is a callable pickled with cloudpickle, unpickled when cloudpickle is
importable.
"""

import base64
import collections
import ctypes
import hashlib
import importlib
import json
import mmap
import os
import platform
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

PROTOCOL = 2

T_HELLO = 0x01
T_DEFINE = 0x10
T_TASKS = 0x11
T_CANCEL = 0x12
T_SHUTDOWN = 0x13
T_HOLD = 0x14
T_RESULTS = 0x20
T_LOG = 0x21
T_STARTED = 0x22

S_OK, S_ERROR, S_PANIC, S_BAD_INPUT, S_BAD_OUTPUT, S_UNKNOWN, S_CANCELED = range(7)

FD_TASKS, FD_RESULTS, FD_LOG = 3, 4, 5
MAX_FRAME = 1 << 30
PICKLED_PREFIX = "cloudpickle:"


class ProtocolError(Exception):
    """The coordinator's stream is malformed."""


class Cancelled(BaseException):
    """Raised in a running function whose task was cancelled."""


# Sent to the main thread on cancellation, to interrupt a blocking call.
CANCEL_SIGNAL = signal.SIGUSR1


# --- encoding ---------------------------------------------------------------


_SMALL = [bytes((i,)) for i in range(0x80)]


def uvarint(n):
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def bytes_field(b):
    return uvarint(len(b)) + b


def frame(typ, body):
    return struct.pack(">IB", len(body) + 1, typ) + body


class Decoder:
    def __init__(self, b):
        self.b = b
        self.i = 0

    def uvarint(self):
        n = shift = 0
        for k in range(10):
            if self.i >= len(self.b):
                raise ProtocolError("truncated varint")
            c = self.b[self.i]
            self.i += 1
            n |= (c & 0x7F) << shift
            if c < 0x80:
                return n
            shift += 7
        raise ProtocolError("varint too long")

    def bytes(self):
        n = self.uvarint()
        if n > len(self.b) - self.i:
            raise ProtocolError("byte string of %d bytes with %d left" % (n, len(self.b) - self.i))
        v = self.b[self.i : self.i + n]
        self.i += n
        return v

    def done(self, what):
        if self.i != len(self.b):
            raise ProtocolError("%s: %d trailing bytes" % (what, len(self.b) - self.i))


def result_entry(key, status, nanos, peak, payload):
    return uvarint(key) + bytes([status]) + uvarint(nanos) + uvarint(peak) + bytes_field(payload)


def decode_value(codec, payload):
    """A function's argument from its payload, by the caller's codec: JSON,
    a str (the caller's string) or bytes (the caller's []byte)."""
    if codec == "string":
        return payload.decode("utf-8")
    if codec == "bytes":
        return bytes(payload)
    return _json_decode(payload.decode("utf-8"))


# JSON as json.loads and json.dumps(allow_nan=False) do it, without their
# per-call argument handling; compact, as Go's encoding/json writes it.
_json_decode = json.JSONDecoder().decode
_json_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def encode_value(codec, value):
    """A function's result as its payload, by the caller's codec."""
    if codec == "string":
        if not isinstance(value, str):
            raise TypeError("the caller expects a str, the function returned %s" % type(value).__name__)
        return value.encode("utf-8")
    if codec == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("the caller expects bytes, the function returned %s" % type(value).__name__)
        return bytes(value)
    return _json_encode(value).encode()


def codec_name(codec):
    return {"string": "a string", "bytes": "bytes"}.get(codec, "JSON")


def failure(status, typ, message, stack=""):
    f = {"type": typ, "message": message}
    if stack:
        f["stack"] = stack
    return status, json.dumps(f).encode()


def type_name(e):
    t = type(e)
    if t.__module__ in ("builtins", "__main__"):
        return t.__qualname__
    return t.__module__ + "." + t.__qualname__


# --- output -----------------------------------------------------------------


class Out:
    """The result stream (fd 4). Each call writes whole frames at once."""

    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Lock()

    def write(self, data):
        with self.lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]


class LogPump:
    """Forwards what this process writes to stdout and stderr (a socket
    whose read end is fd 5) as Log frames tagged with the running task.
    It peeks, forwards, then consumes, so that bytes a dying worker did not
    forward are still there for the host."""

    def __init__(self, fd, out):
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.out = out
        self.key = 0
        self.lock = threading.Lock()
        self.eof = False
        # Used under lock: whether anything is there, without the cost of
        # a recv that fails (most task switches have nothing to forward).
        self.ready = select.poll()
        self.ready.register(self.sock.fileno(), select.POLLIN)

    def run(self):
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while not self.eof:
            poller.poll()
            with self.lock:
                self._drain()

    def _drain(self):
        while not self.eof:
            if not self.ready.poll(0):
                return
            try:
                data = self.sock.recv(1 << 15, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.eof = True
                return
            if not data:
                self.eof = True
                return
            self.out.write(frame(T_LOG, uvarint(self.key) + data))
            self.sock.recv(len(data))

    def switch_to(self, key):
        """Forwards what is pending under the current task, then tags what
        follows with key (0: the worker itself)."""
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass
        with self.lock:
            self._drain()
            self.key = key


class ResultLog:
    """The result log the local host may give the worker (fd 6, named by
    MEADOWRUN_WORKER_RESULT_LOG; docs/protocol.md, "Result log"): shared
    memory the host reads after the worker's death, so that results need
    not be written one by one. Layout: used (u64 LE) at 0, the running key
    at 8, result records from 64."""

    HEADER = 64

    def __init__(self, fd):
        self.mem = mmap.mmap(fd, os.fstat(fd).st_size)
        os.close(fd)
        self.used = 0
        self.reset()
        self.begin(0)

    def begin(self, key):
        struct.pack_into("<Q", self.mem, 8, key)

    def append(self, entry):
        """Records one result entry (bytes first, then used); False when
        there is no room for it."""
        start = self.HEADER + self.used
        end = start + len(entry)
        if end > len(self.mem):
            return False
        self.mem[start:end] = entry
        self.used = end - self.HEADER
        struct.pack_into("<Q", self.mem, 0, self.used)
        return True

    def reset(self):
        self.used = 0
        struct.pack_into("<Q", self.mem, 0, 0)


def open_result_log():
    """The result log, or None when the host gave none."""
    v = os.environ.get("MEADOWRUN_WORKER_RESULT_LOG")
    if not v:
        return None
    try:
        fd = int(v)
        os.set_inheritable(fd, False)
        return ResultLog(fd)
    except (ValueError, OSError):
        return None


# How long results held in the result log may wait for the next write.
HOLD_FOR_NS = 1_000_000


# --- the worker -------------------------------------------------------------


class Worker:
    def __init__(self, inp, out, pump, name, rlog=None):
        self.inp = inp
        self.out = out
        self.pump = pump
        self.name = name
        self.rlog = rlog
        self.hold = False
        self.cond = threading.Condition()
        self.queue = collections.deque()
        self.closed = False
        self.shutdown = False
        self.names = {}
        self.codecs = {}
        self.funcs = {}
        self.canceled = set()
        self.running = 0
        self.running_cmd = None
        self.running_cancel = False
        # in_user is true only while the running task's own function runs
        # (call_user): a Cancel raises in the main thread only then, never
        # in the worker's own code (a frame half written, say).
        self.in_user = False
        self.main_thread = threading.get_ident()

    # Reading.

    def read_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = os.read(self.inp, min(n - len(buf), 1 << 20))
            if not chunk:
                if buf:
                    raise ProtocolError("stream cut inside a frame")
                return None
            buf += chunk
        return bytes(buf)

    def read(self):
        try:
            while True:
                hdr = self.read_exact(4)
                if hdr is None:
                    return
                (n,) = struct.unpack(">I", hdr)
                if n == 0 or n > MAX_FRAME:
                    raise ProtocolError("frame length %d out of range" % n)
                body = self.read_exact(n)
                if body is None:
                    raise ProtocolError("stream cut inside a frame")
                if self.handle(body[0], body[1:]):
                    return
        except Exception as e:
            sys.stderr.write("meadowrun: python worker %s: %s\n" % (self.name, e))
        finally:
            with self.cond:
                self.closed = True
                if not self.shutdown:
                    # The coordinator is gone: stop at once, with what was
                    # started.
                    kill_group()
                self.cond.notify()

    def handle(self, typ, body):
        d = Decoder(body)
        if typ == T_DEFINE:
            fid = d.uvarint()
            name = d.bytes().decode("utf-8", "replace")
            codec = "json/json"
            if d.i < len(d.b):
                codec = d.bytes().decode("utf-8", "replace")
            d.done("define")
            arg_codec, _, res_codec = codec.partition("/")
            with self.cond:
                self.names[fid] = name
                self.codecs[fid] = (arg_codec, res_codec)
        elif typ == T_TASKS:
            count = d.uvarint()
            tasks = []
            for _ in range(count):
                tasks.append((d.uvarint(), d.uvarint(), d.bytes()))
            d.done("tasks")
            with self.cond:
                self.queue.extend(tasks)
                self.cond.notify()
        elif typ == T_CANCEL:
            key = d.uvarint()
            d.done("cancel")
            self.cancel(key)
        elif typ == T_SHUTDOWN:
            with self.cond:
                self.shutdown = True
            return True
        elif typ == T_HOLD:
            d.done("hold")
            if self.rlog is None:
                raise ProtocolError("hold sent to a worker without a result log")
            with self.cond:
                self.hold = True
        else:
            raise ProtocolError("unexpected message type %#x from the coordinator" % typ)
        return False

    def cancel(self, key):
        with self.cond:
            if self.running != key:
                self.canceled.add(key)
                return
            self.running_cancel = True
            if self.running_cmd is not None:
                kill_process(self.running_cmd)
            elif self.in_user:
                # A running function: Cancelled is raised in it as soon as
                # it runs Python code again; the signal interrupts a
                # blocking call (time.sleep, a read), whose handler then
                # runs Python code. Outside the function (the task not
                # yet entered, or being answered) running_cancel is
                # enough: call_user checks it before it calls.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.main_thread), ctypes.py_object(Cancelled))
                try:
                    signal.pthread_kill(self.main_thread, CANCEL_SIGNAL)
                except (OSError, ValueError):
                    pass

    # Running.

    def serve(self):
        """Runs the queued tasks in order until the stream ends. Results
        wait (in pending) until the next task starts or the queue is empty,
        then go out with that task's Started frame in one write; holding
        (the coordinator sent Hold), they wait in the result log instead,
        written at most every HOLD_FOR_NS, and the log's running key
        replaces Started."""
        pending = []
        logged = False  # every pending result is also in the result log
        last_write = 0
        rlog = self.rlog
        while True:
            with self.cond:
                task = self.queue.popleft() if self.queue else None
                if task is not None:
                    key, fid, payload = task
                    was_canceled = key in self.canceled
                    self.canceled.discard(key)
                    self.running, self.running_cancel = key, False
                hold = self.hold
            if task is None:
                # Idle: output from now on is the worker's; what the last
                # task printed goes out ahead of its result.
                self.pump.switch_to(0)
                self.send(pending)
                if logged:
                    rlog.reset()
                pending, logged = [], False
                with self.cond:
                    while not self.queue and not self.closed:
                        self.cond.wait()
                    if not self.queue:
                        return
                continue
            # What the previous task printed goes out under its key, ahead
            # of its result, and the result ahead of this task's Started.
            self.pump.switch_to(key)
            start = time.monotonic_ns()
            if hold:
                if pending and (not logged or start - last_write >= HOLD_FOR_NS):
                    self.send(pending)
                    if logged:
                        rlog.reset()
                    pending, logged = [], False
                if not pending:
                    last_write = start
                rlog.begin(key)
            else:
                self.send(pending, started=key)
                pending, logged = [], False
            try:
                if was_canceled:
                    status, out = failure(S_CANCELED, "canceled", "the task was cancelled before it started")
                elif fid == 0:
                    status, out = self.run_command(payload)
                else:
                    status, out = self.run_function(fid, payload)
            except Cancelled:
                status, out = failure(S_CANCELED, "canceled", "the task was cancelled")
            nanos = time.monotonic_ns() - start
            self.stop_running()
            peak = 0
            if nanos >= 1_000_000:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            entry = result_entry(key, status, nanos, peak, out)
            if hold:
                if not pending:
                    logged = True
                if logged and not rlog.append(entry):
                    # Full: what it holds goes out, then this one waits
                    # alone.
                    self.send(pending)
                    rlog.reset()
                    pending = []
                    logged = rlog.append(entry)
            else:
                logged = False
            pending.append(entry)

    def stop_running(self):
        """Marks no task as running; a Cancel that raced with the end of
        the task is dropped."""
        while True:
            try:
                with self.cond:
                    self.running, self.running_cmd, self.in_user = 0, None, False
                    if self.running_cancel:
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.main_thread), None)
                return
            except Cancelled:
                continue

    def call_user(self, fn, arg):
        """Calls the task's function, the only code a Cancel raises in."""
        with self.cond:
            if self.running_cancel:
                raise Cancelled()
            self.in_user = True
        try:
            return fn(arg)
        finally:
            self.leave_user()

    def leave_user(self):
        """Ends the window in which a Cancel raises: one raised in the
        meantime (the function had returned) is dropped, as is one still
        pending; the task's own outcome stands."""
        while True:
            try:
                with self.cond:
                    if self.in_user:
                        self.in_user = False
                        if self.running_cancel:
                            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.main_thread), None)
                return
            except Cancelled:
                continue

    def send(self, pending, started=None):
        data = b""
        if pending:
            data = frame(T_RESULTS, uvarint(len(pending)) + b"".join(pending))
        if started is not None:
            data += frame(T_STARTED, uvarint(started))
        if data:
            self.out.write(data)

    def resolve(self, fid):
        """Returns the function of id fid, or a failure."""
        if fid in self.funcs:
            return self.funcs[fid]
        with self.cond:
            name = self.names.get(fid)
        if name is None:
            r = failure(S_UNKNOWN, "unknown-function", "function id %d was never defined on this connection" % fid)
        else:
            r = resolve_name(name, self.name)
            self.funcs[fid] = r
        return r

    def run_function(self, fid, payload):
        fn = self.resolve(fid)
        if isinstance(fn, tuple):
            return fn
        with self.cond:
            arg_codec, res_codec = self.codecs.get(fid, ("json", "json"))
        try:
            arg = decode_value(arg_codec, payload)
        except (UnicodeDecodeError, ValueError) as e:
            return failure(S_BAD_INPUT, type_name(e), "decoding the argument of %s as %s: %s" % (fn.__qualname__, codec_name(arg_codec), e))
        try:
            res = self.call_user(fn, arg)
        except Cancelled:
            raise
        except SystemExit as e:
            # A task that calls sys.exit ends its worker, as os._exit does.
            code = e.code
            if code is None:
                code = 0
            elif not isinstance(code, int):
                sys.stderr.write("%s\n" % code)
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        except BaseException as e:
            return failure(S_ERROR, type_name(e), str(e), "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        try:
            return S_OK, encode_value(res_codec, res)
        except (TypeError, ValueError) as e:
            return failure(S_BAD_OUTPUT, type_name(e), "encoding the result of %s as %s: %s" % (fn.__qualname__, codec_name(res_codec), e))

    def run_command(self, payload):
        try:
            c = json.loads(payload.decode("utf-8"))
            args = c.get("args") or []
            if not args:
                raise ValueError("empty command")
        except (UnicodeDecodeError, ValueError, AttributeError) as e:
            return failure(S_BAD_INPUT, "bad-command", str(e))
        fd, result_file = tempfile.mkstemp(prefix="meadowrun-result-", dir=os.environ.get("MEADOWRUN_WORKER_TMPDIR") or None)
        os.close(fd)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MEADOWRUN_WORKER")}
            env.update(c.get("env") or {})
            env["MEADOWRUN_RESULT_FILE"] = result_file
            if c.get("context_variables") is not None:
                env["MEADOWRUN_CONTEXT_VARIABLES"] = json.dumps(c["context_variables"], separators=(",", ":"))
            cr = {"exit_code": 0}
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                with self.cond:
                    if self.running_cancel:
                        raise Cancelled()
                    p = subprocess.Popen(args, env=env, cwd=c.get("dir") or None)
                    self.running_cmd = p
                rc = p.wait()
                if rc < 0:
                    cr["signal"] = signal_name(-rc)
                    rc = 128 - rc
                cr["exit_code"] = rc
            except FileNotFoundError:
                cr["exit_code"], cr["not_found"] = 127, True
                sys.stderr.write("meadowrun: command not found: %s\n" % args[0])
            except PermissionError:
                cr["exit_code"] = 126
                sys.stderr.write("meadowrun: permission denied: %s\n" % args[0])
            except OSError as e:
                return failure(S_ERROR, "command", str(e))
            if self.running_cancel:
                return failure(S_CANCELED, "canceled", "the command was cancelled")
            with open(result_file, "rb") as f:
                data = f.read()
            if data:
                cr["result"] = base64.b64encode(data).decode()
            return S_OK, json.dumps(cr).encode()
        finally:
            try:
                os.remove(result_file)
            except OSError:
                pass


def resolve_name(name, worker):
    """Imports the function called name: a function, or a failure tuple."""
    if name.startswith(PICKLED_PREFIX):
        try:
            import cloudpickle
        except ImportError:
            return failure(S_UNKNOWN, "unknown-function", "%s is a pickled callable, but cloudpickle is not importable in worker %s" % (name[:40], worker))
        try:
            return cloudpickle.loads(base64.b64decode(name[len(PICKLED_PREFIX) :]))
        except Exception as e:
            return failure(S_UNKNOWN, type_name(e), "unpickling a callable: %s" % e, traceback.format_exc())
    parts = name.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return failure(S_UNKNOWN, "unknown-function", "%r is not a Python function name of the form package.module.function" % name)
    missing = None
    for i in range(len(parts) - 1, 0, -1):
        modname = ".".join(parts[:i])
        try:
            obj = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name is not None and (modname == e.name or modname.startswith(e.name + ".")):
                missing = missing or e
                continue  # try a shorter module name
            return failure(S_UNKNOWN, type_name(e), "importing %s for %s: %s" % (modname, name, e), traceback.format_exc())
        except BaseException as e:
            return failure(S_UNKNOWN, type_name(e), "importing %s for %s: %s" % (modname, name, e), traceback.format_exc())
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return failure(S_UNKNOWN, "unknown-function", "module %s (%s) has no %s, for %s" % (modname, getattr(obj, "__file__", "?"), ".".join(parts[i:]), name))
        if not callable(obj):
            return failure(S_UNKNOWN, "unknown-function", "%s is not callable" % name)
        return obj
    return failure(S_UNKNOWN, "unknown-function", "cannot import %s in worker %s: %s (sys.path starts with %s)" % (name, worker, missing, sys.path[0]))


def signal_name(n):
    try:
        return (signal.strsignal(n) or str(n)).lower()
    except ValueError:
        return "signal %d" % n


def kill_process(p):
    try:
        p.kill()
    except OSError:
        pass


def kill_group():
    """Ends the worker: removes its temporary directory, then kills its
    process group (the commands it started, and itself) when it leads it."""
    tmp = os.environ.get("MEADOWRUN_WORKER_TMPDIR")
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(0)


def receive_fds(path):
    """Receives the protocol file descriptors from the host's socket at
    path (MEADOWRUN_WORKER_FDS, for workers in containers): the task
    reader, the result writer, and the read and write ends of the output
    socket; the write end becomes stdout and stderr."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect(path)
        # recvmsg, not socket.recv_fds, which Python 3.8 lacks.
        _, ancdata, _, _ = s.recvmsg(1, socket.CMSG_SPACE(4 * 4))
    fds = []
    for level, typ, data in ancdata:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            n = len(data) // 4
            fds += struct.unpack("%di" % n, data[: 4 * n])
    if len(fds) != 4:
        raise OSError("want 4 file descriptors from %s, got %d" % (path, len(fds)))
    for out in (1, 2):
        os.dup2(fds[3], out)
    os.close(fds[3])
    return fds[0], fds[1], fds[2]


def main():
    global FD_TASKS, FD_RESULTS, FD_LOG
    path = os.environ.get("MEADOWRUN_WORKER_FDS")
    if path:
        try:
            FD_TASKS, FD_RESULTS, FD_LOG = receive_fds(path)
        except OSError as e:
            sys.stderr.write("meadowrun: python worker: receiving its file descriptors: %s\n" % e)
            return 2
    for fd in (FD_TASKS, FD_RESULTS, FD_LOG):
        try:
            os.set_inheritable(fd, False)
        except OSError:
            if fd != FD_LOG:
                sys.stderr.write("meadowrun: python worker started without its protocol file descriptors\n")
                return 2
    # Functions resolve from the caller's working directory, not from the
    # directory this file is cached in.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.getcwd())
    for f in (sys.stdout, sys.stderr):
        try:
            f.reconfigure(line_buffering=True)
        except AttributeError:
            pass
    with open(os.path.abspath(__file__), "rb") as f:
        digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()
    name = os.environ.get("MEADOWRUN_WORKER_NAME", "")
    out = Out(FD_RESULTS)
    hello = {
        "protocol": PROTOCOL,
        "language": "python",
        "runtime": "%s%s" % (platform.python_implementation().lower(), platform.python_version()),
        "pid": os.getpid(),
        "worker": name,
        "binary_digest": digest,
        "functions": [],
        "dynamic": True,
    }
    rlog = open_result_log()
    if rlog is not None:
        hello["result_log"] = True
    out.write(frame(T_HELLO, json.dumps(hello).encode()))
    pump = LogPump(FD_LOG, out)
    threading.Thread(target=pump.run, daemon=True).start()
    # A task that ends its worker (os._exit, or sys.exit through the
    # worker) waits for the pump's forward-then-consume step in flight:
    # every byte then is either forwarded or still in the socket for the
    # host, never both.
    real_exit = os._exit

    def exit_after_pump(code):
        # Bounded: a pump stuck writing (a coordinator that stopped
        # reading) must not keep the worker from exiting.
        pump.lock.acquire(timeout=5)
        real_exit(code)

    os._exit = exit_after_pump
    w = Worker(FD_TASKS, out, pump, name, rlog)
    # A handler that does nothing: running it is when a pending Cancelled
    # is raised, out of whatever blocking call the signal interrupted.
    signal.signal(CANCEL_SIGNAL, lambda signum, frame: None)
    threading.Thread(target=w.read, daemon=True).start()
    w.serve()
    pump.switch_to(0)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
