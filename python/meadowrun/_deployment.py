"""Resources, deployments, interpreters and secrets, and how each maps to
the meadowrun CLI's flags."""

import abc
import dataclasses
import os
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Union

from ._hosts import Host


def _unsupported(what: str, instead: str) -> NotImplementedError:
    return NotImplementedError("meadowrun: %s is not supported by this engine yet; %s" % (what, instead))


@dataclasses.dataclass(frozen=True)
class Resources:
    """What a job, or each task of a map, needs: enforced by the engine."""

    logical_cpu: Optional[float] = None
    memory_gb: Optional[float] = None
    max_eviction_rate: float = 80
    gpus: Optional[float] = None
    gpu_memory: Optional[float] = None
    flags_required: Union[Iterable[str], str, None] = None
    ephemeral_storage: Optional[float] = None

    def flags(self) -> List[str]:
        """The CLI's resource flags."""
        out = []
        for flag, v in (
            ("--cpu", self.logical_cpu),
            ("--memory", self.memory_gb),
            ("--gpus", self.gpus),
            ("--gpu-memory", self.gpu_memory),
            ("--ephemeral-storage", self.ephemeral_storage),
        ):
            if v is not None:
                out += [flag, repr(float(v))]
        if self.max_eviction_rate != 80:
            out += ["--max-eviction-rate", repr(float(self.max_eviction_rate))]
        if self.flags_required:
            fl = [self.flags_required] if isinstance(self.flags_required, str) else list(self.flags_required)
            out += ["--flags", ",".join(fl)]
        return out


# Secrets.


class Secret(abc.ABC):
    """A secret, e.g. a registry's username and password."""


@dataclasses.dataclass(frozen=True)
class AwsSecret(Secret):
    secret_name: str


@dataclasses.dataclass(frozen=True)
class AzureSecret(Secret):
    secret_name: str
    vault_name: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class EnvSecret(Secret):
    """Not in the reference: a username and password held in this
    process's environment variables (the CLI's --registry-user-env and
    --registry-password-env)."""

    username_env: str
    password_env: str


def _secret_flags(secret: Optional[Secret]) -> List[str]:
    if secret is None:
        return []
    if isinstance(secret, EnvSecret):
        return ["--registry-user-env", secret.username_env, "--registry-password-env", secret.password_env]
    if isinstance(secret, AwsSecret):
        # Read by the engine from AWS Secrets Manager (a JSON object with
        # "username" and "password"), with the environment's AWS
        # credentials and region.
        return ["--registry-aws-secret", secret.secret_name]
    raise _unsupported(type(secret).__name__, "give the registry's credentials as AwsSecret(name) or EnvSecret(username_env, password_env)")


# Interpreters.


class LocalInterpreter(abc.ABC):
    """A Python interpreter on this machine."""


@dataclasses.dataclass(frozen=True)
class LocalCurrentInterpreter(LocalInterpreter):
    """The interpreter running this program (mirror_local's default)."""


@dataclasses.dataclass(frozen=True)
class LocalCondaInterpreter(LocalInterpreter):
    environment_name_or_path: str
    additional_software: Union[Sequence[str], str, None] = None


@dataclasses.dataclass(frozen=True)
class LocalPipInterpreter(LocalInterpreter):
    path_to_interpreter: str
    python_version: Optional[str] = None
    additional_software: Union[Sequence[str], str, None] = None


class InterpreterSpecFile(abc.ABC):
    """A file from which each machine builds the environment."""


@dataclasses.dataclass(frozen=True)
class CondaEnvironmentFile(InterpreterSpecFile):
    path_to_file: str
    file_format: Optional[str] = None
    additional_software: Union[Sequence[str], str, None] = None


@dataclasses.dataclass(frozen=True)
class PipRequirementsFile(InterpreterSpecFile):
    path_to_requirements_file: str
    python_version: Optional[str] = None
    additional_software: Union[Sequence[str], str, None] = None


@dataclasses.dataclass(frozen=True)
class PoetryProjectPath(InterpreterSpecFile):
    path_to_project: str
    python_version: Optional[str] = None
    additional_software: Union[Sequence[str], str, None] = None


class ContainerInterpreterBase(abc.ABC):
    """A container image whose `python` is the interpreter."""


@dataclasses.dataclass(frozen=True)
class ContainerInterpreter(ContainerInterpreterBase):
    repository_name: str
    tag: str = "latest"
    username_password_secret: Optional[Secret] = None
    always_use_local: bool = False


@dataclasses.dataclass(frozen=True)
class ContainerAtDigestInterpreter(ContainerInterpreterBase):
    repository_name: str
    digest: str
    username_password_secret: Optional[Secret] = None
    always_use_local: bool = False


@dataclasses.dataclass(frozen=True)
class PreinstalledInterpreter:
    """An interpreter already on the machines, e.g. /usr/bin/python3."""

    path_to_interpreter: str


MEADOWRUN_INTERPRETER = "python3"


def _no_extra_software(interp) -> None:
    if getattr(interp, "additional_software", None):
        raise _unsupported("additional_software (apt packages)", "install them on the machines beforehand")


def _spec_flags(i: InterpreterSpecFile) -> List[str]:
    """The CLI's environment flags (of run and of map --python)."""
    if isinstance(i, PipRequirementsFile):
        out = ["--requirements", i.path_to_requirements_file]
        return out + (["--python-version", i.python_version] if i.python_version else [])
    if isinstance(i, PoetryProjectPath):
        out = ["--poetry", i.path_to_project]
        return out + (["--python-version", i.python_version] if i.python_version else [])
    if isinstance(i, CondaEnvironmentFile):
        if i.file_format == "list":
            raise _unsupported("CondaEnvironmentFile(file_format='list')", "use a conda env export file")
        return ["--conda-env-file", i.path_to_file]
    raise TypeError("meadowrun: %r is not an interpreter spec file" % (i,))


# Deployments.


@dataclasses.dataclass(frozen=True)
class Deployment:
    """The code and libraries a job runs with. Make one with the class
    methods; None (the default of every run_*) is mirror_local()."""

    interpreter: object = None
    environment_variables: Optional[Dict[str, str]] = None
    sys_paths: Sequence[str] = ()
    globs: Sequence[str] = ()

    @classmethod
    async def mirror_local(
        cls,
        include_sys_path: bool = True,
        additional_sys_paths: Union[Iterable[str], str] = tuple(),
        include_sys_path_contents: Union[bool, Iterable[str], str] = True,
        interpreter=None,
        globs: Union[str, Iterable[str], None] = None,
        environment_variables: Optional[Dict[str, str]] = None,
    ) -> "Deployment":
        """This machine's interpreter and code: on Local() the workers run
        this interpreter with this sys.path; remote machines get the files
        matching globs (relative to the working directory) in the workers'
        working directory, from which functions are imported. interpreter may
        be a LocalPipInterpreter, a PipRequirementsFile, PoetryProjectPath
        or CondaEnvironmentFile (built once per machine), a
        ContainerInterpreter or a PreinstalledInterpreter."""
        if isinstance(globs, str):
            globs = [globs]
        if include_sys_path_contents not in (True, False):
            raise _unsupported("mirror_local(include_sys_path_contents=[...])", "leave it True")
        if isinstance(additional_sys_paths, str):
            additional_sys_paths = [additional_sys_paths]
        paths = []
        if include_sys_path:
            paths += [os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)]
        paths += [os.path.abspath(p) for p in additional_sys_paths]
        if interpreter is None:
            interpreter = LocalCurrentInterpreter()
        if isinstance(interpreter, LocalCondaInterpreter):
            raise _unsupported(
                "LocalCondaInterpreter", "export the environment (conda env export > env.yml) and use CondaEnvironmentFile('env.yml')"
            )
        return cls(interpreter, environment_variables, tuple(dict.fromkeys(paths)), tuple(globs or ()))

    @classmethod
    def preinstalled_interpreter(cls, path_to_interpreter: str, environment_variables: Optional[Dict[str, str]] = None) -> "Deployment":
        """An interpreter already installed on the machines."""
        return cls(PreinstalledInterpreter(path_to_interpreter), environment_variables)

    @classmethod
    def container_image(
        cls, repository: str, tag: str = "latest", username_password_secret: Optional[Secret] = None, environment_variables: Optional[Dict[str, str]] = None
    ) -> "Deployment":
        """A container image, pulled once per machine."""
        return cls(ContainerInterpreter(repository, tag, username_password_secret), environment_variables)

    @classmethod
    def container_image_at_digest(
        cls, repository: str, digest: str, username_password_secret: Optional[Secret] = None, environment_variables: Optional[Dict[str, str]] = None
    ) -> "Deployment":
        """A container image named by digest (commands only, for now)."""
        return cls(ContainerAtDigestInterpreter(repository, digest, username_password_secret), environment_variables)

    @classmethod
    def git_repo(cls, repo_url: str, branch=None, commit=None, path_to_source=None, interpreter=None, environment_variables=None,
                 ssh_key_secret=None, editable_install=True) -> "Deployment":
        """Not served yet: raises NotImplementedError."""
        raise _unsupported("Deployment.git_repo", "clone the repository on the machines and use mirror_local or preinstalled_interpreter")

    # How the CLI is told.

    def env_flags(self, host: Host, python: bool) -> List[str]:
        env = dict(self.environment_variables or {})
        if python and self.sys_paths and host.is_local() and "PYTHONPATH" not in env:
            env["PYTHONPATH"] = os.pathsep.join(self.sys_paths)
        out = []
        for k, v in env.items():
            out += ["--env", "%s=%s" % (k, v)]
        return out

    def command_flags(self, host: Host) -> List[str]:
        """The flags of `meadowrun run` for this deployment."""
        i = self.interpreter
        out = self.env_flags(host, python=False)
        if self.globs and not host.is_local():
            raise _unsupported("run_command with mirror_local(globs=...) on a remote host", "run a Python function, whose globs travel")
        if isinstance(i, ContainerInterpreter):
            return out + ["--image", "%s:%s" % (i.repository_name, i.tag)] + _secret_flags(i.username_password_secret)
        if isinstance(i, ContainerAtDigestInterpreter):
            return out + ["--image", "%s@%s" % (i.repository_name, i.digest)] + _secret_flags(i.username_password_secret)
        if isinstance(i, InterpreterSpecFile):
            # The command runs in the environment: its bin directory first
            # on PATH, VIRTUAL_ENV set.
            _no_extra_software(i)
            return out + _spec_flags(i)
        return out

    def python_flags(self, host: Host) -> List[str]:
        """The flags of `meadowrun map --python` for this deployment."""
        i = self.interpreter
        _no_extra_software(i)
        out = self.env_flags(host, python=True)
        for g in self.globs:
            # The files travel to remote machines' working directories, from
            # which the worker imports.
            out += ["--glob", g]
        if i is None or isinstance(i, LocalCurrentInterpreter):
            # This interpreter on this machine; the machines' python3
            # elsewhere.
            return out + ["--interpreter", sys.executable if host.is_local() else MEADOWRUN_INTERPRETER]
        if isinstance(i, LocalPipInterpreter):
            if not host.is_local():
                raise _unsupported("LocalPipInterpreter on a remote host", "freeze it (pip freeze > requirements.txt) and use PipRequirementsFile")
            return out + ["--interpreter", i.path_to_interpreter]
        if isinstance(i, PreinstalledInterpreter):
            return out + ["--interpreter", i.path_to_interpreter]
        if isinstance(i, InterpreterSpecFile):
            return out + _spec_flags(i)
        if isinstance(i, ContainerInterpreter):
            return out + ["--image", "%s:%s" % (i.repository_name, i.tag)] + _secret_flags(i.username_password_secret)
        if isinstance(i, ContainerAtDigestInterpreter):
            return out + ["--image", "%s@%s" % (i.repository_name, i.digest)] + _secret_flags(i.username_password_secret)
        raise TypeError("meadowrun: %r is not an interpreter" % (i,))
