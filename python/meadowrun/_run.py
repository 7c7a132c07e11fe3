"""run_function, run_command, run_map and run_map_as_completed: each
runs the meadowrun program (MEADOWRUN_BIN, or meadowrun on PATH) and reads
its JSON results; the engine does the scheduling, retries and
enforcement."""

import asyncio
import base64
import dataclasses
import inspect
import json
import os
import pickle
import shlex
import shutil
import sys
import tempfile
from typing import Any, AsyncIterator, Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar, Union

import cloudpickle

from . import _remote
from ._deployment import ContainerAtDigestInterpreter, ContainerInterpreter, Deployment, Resources, _unsupported
from ._hosts import Host

_T = TypeVar("_T")
_U = TypeVar("_U")

cloudpickle.register_pickle_by_value(_remote)


class MeadowrunException(Exception):
    """A job did not succeed: its command exited non-zero, or the engine
    could not run it. return_code is the command's (or the meadowrun
    program's) exit code, log_file_name the job's log when there is one."""

    def __init__(self, message: str, return_code: Optional[int] = None, log_file_name: Optional[str] = None,
                 job_id: Optional[str] = None):
        super().__init__(message)
        self.return_code = return_code
        self.log_file_name = log_file_name
        self.job_id = job_id


class TaskException(MeadowrunException):
    """A task raised an exception in its worker: exc_type, message and the
    remote traceback say what and where."""

    def __init__(self, task_id: int, attempt: int, exc_type: str, message: str, traceback: str):
        text = "task %d (attempt %d) failed: %s: %s" % (task_id, attempt, exc_type, message)
        if traceback:
            text += "\n\nremote traceback:\n" + traceback.rstrip("\n")
        super().__init__(text)
        self.task_id = task_id
        self.attempt = attempt
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback


class RunMapTasksFailedException(MeadowrunException):
    """run_map's tasks failed: failed_tasks holds their TaskResults,
    raised after every task ended."""

    def __init__(self, failed_tasks: "List[TaskResult]", num_tasks: int):
        lines = ["%d of %d tasks failed:" % (len(failed_tasks), num_tasks)]
        for t in failed_tasks:
            lines.append("  task %d (attempt %d): %s: %s" % (t.task_id, t.attempt, t.exception[0], t.exception[1]))
        super().__init__("\n".join(lines))
        self.failed_tasks = failed_tasks


@dataclasses.dataclass
class TaskResult(Generic[_T]):
    """The outcome of one task of a map."""

    task_id: int
    is_success: bool
    result: Optional[_T] = None
    exception: Optional[Tuple[str, str, str]] = None
    attempt: int = 1

    def result_or_raise(self) -> _T:
        """The task's result, or a TaskException when it failed."""
        if self.is_success:
            return self.result  # type: ignore[return-value]
        assert self.exception is not None
        typ, msg, tb = self.exception
        raise TaskException(self.task_id, self.attempt, typ, msg, tb)


@dataclasses.dataclass
class JobCompletion(Generic[_T]):
    """What a finished job left: its result (None for a command), its
    exit code, its log and where it ran."""

    result: _T
    process_state: str
    public_address: str
    log_file_name: str
    return_code: int
    job_id: str = ""


# --- the meadowrun program ----------------------------------------------------


def meadowrun_binary() -> str:
    """The meadowrun program: $MEADOWRUN_BIN, else meadowrun on PATH."""
    b = os.environ.get("MEADOWRUN_BIN")
    if b:
        if not os.access(b, os.X_OK):
            raise MeadowrunException("meadowrun: MEADOWRUN_BIN is %s, which is not an executable program" % b)
        return b
    b = shutil.which("meadowrun")
    if b is None:
        raise MeadowrunException(
            "meadowrun: the meadowrun program is not on PATH: install it "
            "(go install github.com/meadowrun-go/meadowrun/cmd/meadowrun@latest) or set MEADOWRUN_BIN to its path"
        )
    return b


def _is_meadowrun_line(line: str) -> bool:
    return line.startswith(("meadowrun:", "[meadowrun]", "[worker ", "\nmeadowrun:"))


class _Engine:
    """One run of the meadowrun program: its JSON lines as they come, its
    output forwarded (task output to stdout, meadowrun's own to stderr)."""

    def __init__(self, argv: List[str], stdin: Optional[bytes] = None, tasks: bool = False, strip: bool = False):
        self.argv = argv
        self.stdin = stdin
        # tasks: a map, whose tasks' lines are "[task N] "-prefixed and
        # everything else is meadowrun's; strip drops the prefix (one task).
        self.tasks = tasks
        self.strip = strip
        self.returncode: Optional[int] = None
        self.messages: List[str] = []

    async def lines(self) -> AsyncIterator[Dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE if self.stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 26,
        )
        forward = asyncio.ensure_future(self._forward(proc.stderr))
        feed = asyncio.ensure_future(self._feed(proc.stdin)) if self.stdin is not None else None
        try:
            while True:
                line = await proc.stdout.readline()
                if not line:
                    break
                text = line.strip()
                if not text:
                    continue
                try:
                    obj = json.loads(text)
                except ValueError:
                    obj = None
                if isinstance(obj, dict):
                    yield obj
                else:
                    # Not a result (cancel's confirmation): shown as is.
                    sys.stdout.write(line.decode("utf-8", "replace"))
            if feed is not None:
                await feed
            await forward
            self.returncode = await proc.wait()
        finally:
            if proc.returncode is None:
                # Abandoned (the caller stopped iterating, or was
                # cancelled): SIGTERM cancels the job, as Ctrl-C would.
                proc.terminate()
                await proc.wait()
                forward.cancel()

    async def _feed(self, w) -> None:
        try:
            w.write(self.stdin)
            await w.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            w.close()

    async def _forward(self, r) -> None:
        while True:
            b = await r.readline()
            if not b:
                return
            line = b.decode("utf-8", "replace")
            if self.tasks:
                mine = not line.startswith("[task ")
                if not mine and self.strip:
                    line = line.split("] ", 1)[1] if "] " in line else line
            else:
                mine = _is_meadowrun_line(line.lstrip("\n"))
            if mine:
                self.messages.append(line.rstrip("\n"))
                sys.stderr.write(line)
                sys.stderr.flush()
            else:
                sys.stdout.write(line)
                sys.stdout.flush()

    def failure(self, what: str) -> MeadowrunException:
        """The error of a run that did not report its results."""
        said = "\n".join(m for m in self.messages if m.strip()) or "(it printed nothing on stderr)"
        return MeadowrunException("meadowrun: %s failed (exit %s): %s" % (what, self.returncode, said), return_code=self.returncode)


async def _deployment(deployment) -> Deployment:
    if deployment is None:
        return await Deployment.mirror_local()
    if inspect.isawaitable(deployment):
        deployment = await deployment
    if not isinstance(deployment, Deployment):
        raise TypeError("meadowrun: deployment is %r; make one with Deployment.mirror_local() or another Deployment class method" % (deployment,))
    return deployment


def _check_host(host) -> Host:
    if not isinstance(host, Host):
        raise TypeError("meadowrun: host is %r; use Local() or Ssh(['user@host'])" % (host,))
    host.host_url()  # an unserved host raises here, naming itself
    return host


def _resource_flags(resources: Optional[Resources]) -> List[str]:
    if resources is None:
        return []
    if not isinstance(resources, Resources):
        raise TypeError("meadowrun: resources is %r; use Resources(logical_cpu=..., memory_gb=...)" % (resources,))
    return resources.flags()


def _port_flags(ports) -> List[str]:
    if ports is None:
        return []
    if isinstance(ports, (str, int)):
        ports = [ports]
    out = []
    for p in ports:
        out += ["--port", str(p)]
    return out


def _sidecar_flags(sidecars, dep: Deployment) -> List[str]:
    """--sidecar flags for sidecar_containers: a ContainerInterpreter or
    ContainerAtDigestInterpreter, or several. They log in with the
    deployment image's credentials, so theirs must be none or the same."""
    if sidecars is None:
        return []
    if isinstance(sidecars, (ContainerInterpreter, ContainerAtDigestInterpreter)):
        sidecars = [sidecars]
    image_secret = getattr(dep.interpreter, "username_password_secret", None)
    out = []
    for c in sidecars:
        if isinstance(c, ContainerInterpreter):
            image = "%s:%s" % (c.repository_name, c.tag)
        elif isinstance(c, ContainerAtDigestInterpreter):
            image = "%s@%s" % (c.repository_name, c.digest)
        else:
            raise TypeError("meadowrun: a sidecar container is %r; give ContainerInterpreter(repository, tag)" % (c,))
        if c.username_password_secret is not None and c.username_password_secret != image_secret:
            raise _unsupported("a sidecar with credentials other than its deployment image's",
                               "give the sidecar the deployment image's secret, or none")
        out += ["--sidecar", image]
    return out


# --- commands -----------------------------------------------------------------


async def run_command(
    args: Union[str, Sequence[str]],
    host: Host,
    resources: Optional[Resources] = None,
    deployment=None,
    context_variables: Optional[Dict[str, Any]] = None,
    sidecar_containers=None,
    ports=None,
    wait_for_result: bool = True,
) -> Optional[JobCompletion[None]]:
    """Runs a command (a string is split as a shell would, without a
    shell) on a worker of host, streaming its output to stdout. Returns a
    JobCompletion; raises MeadowrunException when the command exits
    non-zero or cannot run. With wait_for_result=False the job is
    submitted, runs on after this process, and a Job handle is returned
    (the reference returns None). context_variables, a dict encodable as
    JSON, reach the command as that JSON in MEADOWRUN_CONTEXT_VARIABLES."""
    host = _check_host(host)
    argv = shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
    if not argv:
        raise ValueError("meadowrun: run_command needs a command")
    dep = await _deployment(deployment)
    cli = [meadowrun_binary(), "run", "--json", "--host", host.host_url()]
    cli += _resource_flags(resources) + dep.command_flags(host) + _port_flags(ports) + _sidecar_flags(sidecar_containers, dep)
    if context_variables:
        if not isinstance(context_variables, dict):
            raise TypeError("meadowrun: context_variables is %r; give a dict" % (context_variables,))
        try:
            cli += ["--context-variables", json.dumps(context_variables, allow_nan=False)]
        except (TypeError, ValueError) as e:
            raise TypeError("meadowrun: context_variables cannot be encoded as JSON: %s" % e) from None
    if not wait_for_result:
        cli.append("--detach")
    e = _Engine(cli + ["--"] + argv)
    out = [line async for line in e.lines()]
    if not out:
        raise e.failure("meadowrun run")
    r = out[-1]
    if not wait_for_result:
        sys.stderr.write("meadowrun: job %s submitted; follow it with: meadowrun attach %s\n" % (r["id"], r["id"]))
        return Job(r["id"])  # type: ignore[return-value]
    return _completion(r, _address(host))


def _completion(r: Dict[str, Any], address: str) -> JobCompletion[None]:
    """A command's JobCompletion from run --json or attach --json."""
    code = r.get("exit_code", -1)
    if code != 0 or r.get("error"):
        raise MeadowrunException(r.get("error") or "meadowrun: the command exited with code %d" % code,
                                 return_code=code, log_file_name=r.get("log_file"), job_id=r.get("id"))
    return JobCompletion(None, "SUCCEEDED", address, r.get("log_file", ""), code, r.get("id", ""))


def _address(host: Host) -> str:
    return "localhost" if host.is_local() else host.host_url()


# --- functions ----------------------------------------------------------------


def _pickled_name(function) -> str:
    if not (callable(function) or isinstance(function, str)):
        raise TypeError("meadowrun: function is %r; give a callable or a 'package.module.function' name" % (function,))
    if isinstance(function, str) and (len(function.split(".")) < 2 or not all(p.isidentifier() for p in function.split("."))):
        raise ValueError("meadowrun: %r is not a function name of the form package.module.function" % function)
    return "cloudpickle:" + base64.b64encode(cloudpickle.dumps(_remote.make_call(function))).decode()


def _payload(args, kwargs) -> bytes:
    return json.dumps(base64.b64encode(cloudpickle.dumps((tuple(args), dict(kwargs)))).decode()).encode()


async def _python_map(function, inputs: List[bytes], host: Host, resources, deployment, concurrency: int,
                      max_attempts: int, more_memory: bool, wait: bool = True, sidecars=None,
                      ports=None) -> AsyncIterator[TaskResult]:
    host = _check_host(host)
    dep = await _deployment(deployment)
    flags = _resource_flags(resources) + dep.python_flags(host) + _port_flags(ports) + _sidecar_flags(sidecars, dep)
    if max_attempts < 1:
        raise ValueError("meadowrun: max_num_task_attempts is %d; it must be 1 or more" % max_attempts)
    with tempfile.TemporaryDirectory(prefix="meadowrun-py-") as tmp:
        fn_file = os.path.join(tmp, "function")
        with open(fn_file, "w") as f:
            f.write(_pickled_name(function))
        cli = [meadowrun_binary(), "map", "--python", "--json", "--host", host.host_url(), "--function-file", fn_file,
               "-j", str(max(1, concurrency)), "--max-attempts", str(max_attempts)] + flags
        if more_memory:
            cli.append("--retry-with-more-memory")
        if not wait:
            e = _Engine(cli + ["--detach"], b"".join(i + b"\n" for i in inputs))
            out = [line async for line in e.lines()]
            if not out or "id" not in out[-1]:
                raise e.failure("meadowrun map --python --detach")
            raise _Submitted(Job(out[-1]["id"], single=len(inputs) == 1))
        e = _Engine(cli, b"".join(i + b"\n" for i in inputs), tasks=True, strip=len(inputs) == 1)
        seen = set()
        async for line in e.lines():
            r = _task_result(line)
            if r is not None:
                seen.add(r.task_id)
                yield r
        if e.returncode not in (0, 1) or len(seen) < len(inputs):
            raise e.failure("meadowrun map --python")


def _task_result(line: Dict[str, Any]) -> Optional[TaskResult]:
    """A task's line of map --python --json (or attach --json) as a
    TaskResult; None for a line that is not a task's."""
    task = line.get("task", -1)
    if task < 0:
        return None
    attempt = line.get("attempt", 1)
    if line.get("ok"):
        return TaskResult(task, True, pickle.loads(base64.b64decode(line["value"])), None, attempt)
    kind = line.get("error_kind", "")
    typ = line.get("error_type") or kind or "MeadowrunError"
    msg = line.get("error", "")
    if "cloudpickle is not importable" in msg:
        msg += ("; the workers' interpreter needs cloudpickle: install it there, or deploy an environment "
                "that has it (Deployment.mirror_local(interpreter=PipRequirementsFile(...)) listing cloudpickle)")
    return TaskResult(task, False, None, (typ, msg, line.get("traceback", "")), attempt)


class _Submitted(Exception):
    """Carries a detached job's handle out of _python_map."""

    def __init__(self, job: "Job"):
        super().__init__(job.job_id)
        self.job = job


class Job:
    """A job submitted with wait_for_result=False (not in the reference,
    which returns None): it runs on after this process exits. Any process
    attaches to it with Job(job_id), or meadowrun attach JOB_ID in a
    shell."""

    def __init__(self, job_id: str, single: bool = False):
        self.job_id = job_id
        self.single = single

    def __repr__(self) -> str:
        return "Job(%r)" % self.job_id

    async def as_completed(self) -> AsyncIterator[TaskResult]:
        """A function's or map's TaskResults as its tasks complete (at
        once for a finished job)."""
        e = _Engine([meadowrun_binary(), "attach", "--json", self.job_id], tasks=True, strip=self.single)
        async for line in e.lines():
            r = _task_result(line)
            if r is not None:
                yield r
        if e.returncode not in (0, 1):
            raise e.failure("meadowrun attach")

    async def results(self) -> List[Any]:
        """A map's results in task order; RunMapTasksFailedException when
        tasks failed."""
        got = {r.task_id: r async for r in self.as_completed()}
        rs = [got[i] for i in sorted(got)]
        failed = [r for r in rs if not r.is_success]
        if failed:
            raise RunMapTasksFailedException(failed, len(rs))
        return [r.result for r in rs]

    async def result(self) -> Any:
        """A function's result, or its TaskException."""
        rs = [r async for r in self.as_completed()]
        if len(rs) != 1:
            raise MeadowrunException("meadowrun: job %s has %d tasks; use results() for a map" % (self.job_id, len(rs)))
        return rs[0].result_or_raise()

    async def wait(self) -> JobCompletion[None]:
        """A command's JobCompletion; MeadowrunException when it failed."""
        e = _Engine([meadowrun_binary(), "attach", "--json", self.job_id])
        out = [line async for line in e.lines()]
        if not out:
            raise e.failure("meadowrun attach")
        return _completion(out[-1], "")

    async def cancel(self) -> None:
        """Cancels the job; its finished tasks' results are kept."""
        e = _Engine([meadowrun_binary(), "cancel", self.job_id])
        [line async for line in e.lines()]
        if e.returncode != 0:
            raise e.failure("meadowrun cancel")


async def run_function(
    function: Union[Callable[..., _T], str],
    host: Host,
    resources: Optional[Resources] = None,
    deployment=None,
    args: Optional[Sequence[Any]] = None,
    kwargs: Optional[Dict[str, Any]] = None,
    sidecar_containers=None,
    ports=None,
    wait_for_result: bool = True,
) -> _T:
    """Runs function(*args, **kwargs) on a worker of host and returns its
    result. function is a callable (lambdas and closures too: it is
    pickled with cloudpickle, which the machines' interpreter needs) or a
    "package.module.function" name, imported there. A Python exception
    comes back as a TaskException with the remote type, message and
    traceback. With wait_for_result=False the job is submitted and a Job
    handle returned (the reference returns None)."""
    inputs = [_payload(args or (), kwargs or {})]
    try:
        results = [r async for r in _python_map(function, inputs, host, resources, deployment, 1, 1, False, wait_for_result,
                                                sidecar_containers, ports)]
    except _Submitted as s:
        return s.job  # type: ignore[return-value]
    return results[0].result_or_raise()


async def run_map_as_completed(
    function: Callable[[_T], _U],
    args: Sequence[_T],
    host: Host,
    resources_per_task: Optional[Resources] = None,
    deployment=None,
    num_concurrent_tasks: Optional[int] = None,
    sidecar_containers=None,
    ports=None,
    max_num_task_attempts: int = 1,
    retry_with_more_memory: bool = False,
) -> AsyncIterator[TaskResult[_U]]:
    """Runs function on each of args, num_concurrent_tasks at a time
    (default: half the tasks plus one), yielding a TaskResult per task as
    it completes; failed tasks are retried up to max_num_task_attempts."""
    args = list(args)
    if not args:
        return
    n = num_concurrent_tasks if num_concurrent_tasks is not None else len(args) // 2 + 1
    async for r in _python_map(function, [_payload((a,), {}) for a in args], host, resources_per_task, deployment, n,
                               max_num_task_attempts, retry_with_more_memory, True, sidecar_containers, ports):
        yield r


async def run_map(
    function: Callable[[_T], _U],
    args: Sequence[_T],
    host: Host,
    resources_per_task: Optional[Resources] = None,
    deployment=None,
    num_concurrent_tasks: Optional[int] = None,
    sidecar_containers=None,
    ports=None,
    wait_for_result: bool = True,
    max_num_task_attempts: int = 1,
    retry_with_more_memory: bool = False,
) -> Optional[Sequence[_U]]:
    """Equivalent to map(function, args), run in parallel on workers of
    host. Returns the results in the order of args; when tasks fail,
    raises RunMapTasksFailedException after every task ended, naming
    them. With wait_for_result=False the job is submitted and a Job handle
    returned (the reference returns None)."""
    args = list(args)
    if not wait_for_result:
        n = num_concurrent_tasks if num_concurrent_tasks is not None else len(args) // 2 + 1
        try:
            [r async for r in _python_map(function, [_payload((a,), {}) for a in args], host, resources_per_task, deployment, n,
                                          max_num_task_attempts, retry_with_more_memory, False, sidecar_containers, ports)]
        except _Submitted as s:
            return s.job  # type: ignore[return-value]
    results: List[Optional[TaskResult]] = [None] * len(args)
    async for r in run_map_as_completed(function, args, host, resources_per_task, deployment, num_concurrent_tasks,
                                        sidecar_containers, ports, max_num_task_attempts, retry_with_more_memory):
        results[r.task_id] = r
    failed = [r for r in results if r is not None and not r.is_success]
    if failed:
        raise RunMapTasksFailedException(failed, len(args))
    return [r.result for r in results]  # type: ignore[union-attr]
