"""Hosts: where work runs. Local() and Ssh(...) are served by the engine;
the cloud hosts of the reference exist and raise a clear error when used."""

import abc
import dataclasses
import urllib.parse
from typing import Any, Callable, Optional, Sequence, Union


class Host(abc.ABC):
    """Where a job runs. See Local and Ssh; the cloud hosts of the
    reference are named but not served by this engine yet."""

    @abc.abstractmethod
    def host_url(self) -> str:
        """The meadowrun CLI's --host URL for this host."""

    def is_local(self) -> bool:
        return False


@dataclasses.dataclass(frozen=True)
class Local(Host):
    """This machine: workers are processes of the meadowrun program.
    cpu and memory_gb, when set, limit the budget the workers share."""

    cpu: Optional[float] = None
    memory_gb: Optional[float] = None

    def host_url(self) -> str:
        q = {}
        if self.cpu is not None:
            q["cpu"] = _num(self.cpu)
        if self.memory_gb is not None:
            q["memory"] = _num(self.memory_gb)
        return "local" + ("://?" + urllib.parse.urlencode(q) if q else "")

    def is_local(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class Ssh(Host):
    """Machines reached over SSH, given as "user@host" or "user@host:port"
    (the CLI's --host ssh://user@host,...). The options map to the ssh://
    URL's query: key files, known_hosts files, the default user, the
    remote working directory, an OpenSSH config file, a connect timeout
    ("10s") and trust on first use."""

    hosts: Sequence[str]
    identity_files: Sequence[str] = ()
    known_hosts_files: Sequence[str] = ()
    user: Optional[str] = None
    remote_dir: Optional[str] = None
    config_file: Optional[str] = None
    timeout: Optional[str] = None
    tofu: Optional[bool] = None

    def __post_init__(self):
        if isinstance(self.hosts, str):
            object.__setattr__(self, "hosts", [self.hosts])
        if not self.hosts:
            raise ValueError("meadowrun: Ssh needs at least one machine, as in Ssh(['user@host'])")

    def host_url(self) -> str:
        q = [("key", k) for k in self.identity_files] + [("known_hosts", k) for k in self.known_hosts_files]
        for name, v in (("user", self.user), ("dir", self.remote_dir), ("config", self.config_file), ("timeout", self.timeout)):
            if v is not None:
                q.append((name, v))
        if self.tofu is not None:
            q.append(("tofu", "true" if self.tofu else "false"))
        url = "ssh://" + ",".join(self.hosts)
        if q:
            url += "?" + urllib.parse.urlencode(q)
        return url


class _Unserved(Host):
    """A host of the reference that this engine cannot serve yet."""

    def host_url(self) -> str:
        raise NotImplementedError(
            "meadowrun: the %s host is not served by this engine yet; "
            "run on Local() or on Ssh(['user@host']) instead" % type(self).__name__
        )


class AllocVM(_Unserved, abc.ABC):
    """The reference's base of AllocEC2Instance and AllocAzureVM."""


@dataclasses.dataclass(frozen=True)
class AllocEC2Instance(AllocVM):
    """EC2 instances launched or reused on demand: the CLI's --host
    ec2://REGION?ami=...; credentials from the environment
    ($AWS_ACCESS_KEY_ID, ...). The engine logs in with an EC2 key pair:
    key_name and key_file (not in the reference, whose key pair
    `meadowrun ec2 install` made) name it and its private key file. A
    subnet_id may list several, comma-separated, tried in order."""

    region_name: Optional[str] = None
    ami_id: Optional[str] = None
    subnet_id: Optional[str] = None
    security_group_ids: Union[str, Sequence[str], None] = None
    iam_role_instance_profile: Optional[str] = None
    key_name: Optional[str] = None
    key_file: Optional[str] = None

    def host_url(self) -> str:
        if not self.region_name:
            raise ValueError("meadowrun: AllocEC2Instance needs region_name, e.g. AllocEC2Instance('us-east-2', ami_id=...)")
        q = []
        if self.ami_id:
            q.append(("ami", self.ami_id))
        for sn in (self.subnet_id or "").split(","):
            if sn.strip():
                q.append(("subnet", sn.strip()))
        sgs = self.security_group_ids
        if isinstance(sgs, str):
            sgs = [sgs]
        q += [("sg", g) for g in sgs or ()]
        if self.iam_role_instance_profile:
            q.append(("profile", self.iam_role_instance_profile))
        if self.key_name:
            q.append(("key_name", self.key_name))
        if self.key_file:
            q.append(("key", self.key_file))
        return "ec2://" + self.region_name + ("?" + urllib.parse.urlencode(q) if q else "")


@dataclasses.dataclass(frozen=True)
class AllocAzureVM(AllocVM):
    """A dynamically allocated Azure VM (not served yet)."""

    location: Optional[str] = None


def AllocCloudInstance(cloud_provider: str, region_name: Optional[str] = None) -> AllocVM:
    """Deprecated in the reference: AllocEC2Instance or AllocAzureVM."""
    if cloud_provider == "EC2":
        return AllocEC2Instance(region_name)
    if cloud_provider == "AzureVM":
        return AllocAzureVM(region_name)
    raise ValueError("meadowrun: unknown cloud_provider %r: use 'EC2' or 'AzureVM'" % cloud_provider)


class StorageBucketSpec(abc.ABC):
    """Object storage for the Kubernetes host."""


@dataclasses.dataclass(frozen=True)
class GenericStorageBucketSpec(StorageBucketSpec):
    bucket: str
    endpoint_url: str
    endpoint_url_in_cluster: Optional[str] = None
    username_password_secret: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class GoogleBucketSpec(StorageBucketSpec):
    bucket: str


@dataclasses.dataclass(frozen=True)
class Kubernetes(Host):
    """A Kubernetes cluster: the CLI's --host k8s://CONTEXT?namespace=...,
    with the kubeconfig of $KUBECONFIG or ~/.kube/config. Work runs in
    pods, reusable ones kept warm unless reusable_pods is False.
    storage_spec is the bucket pods fetch the engine's program from;
    pod_customization is not served (the engine's is a Go function)."""

    storage_spec: Optional[StorageBucketSpec] = None
    kube_config_context: Optional[str] = None
    kubernetes_namespace: str = "default"
    reusable_pods: bool = True
    pod_customization: Optional[Callable[[Any], Any]] = None

    def host_url(self) -> str:
        if self.pod_customization is not None:
            raise NotImplementedError("meadowrun: Kubernetes(pod_customization=...) is not served by this engine yet; "
                                      "the engine's is a Go function (kubernetes.Options.PodCustomization)")
        q = [("namespace", self.kubernetes_namespace or "default")]
        if not self.reusable_pods:
            q.append(("reusable", "false"))
        spec = self.storage_spec
        if isinstance(spec, GenericStorageBucketSpec):
            q += [("storage", "s3"), ("bucket", spec.bucket), ("endpoint", spec.endpoint_url)]
            if spec.endpoint_url_in_cluster:
                q.append(("endpoint_in_cluster", spec.endpoint_url_in_cluster))
            if spec.username_password_secret:
                q.append(("secret", spec.username_password_secret))
        elif isinstance(spec, GoogleBucketSpec):
            q += [("storage", "gcs"), ("bucket", spec.bucket)]
        elif spec is not None:
            raise TypeError("meadowrun: Kubernetes(storage_spec=%r): want a GenericStorageBucketSpec or a GoogleBucketSpec" % (spec,))
        return "k8s://" + urllib.parse.quote(self.kube_config_context or "", safe="") + "?" + urllib.parse.urlencode(q)


def _num(x: float) -> str:
    return ("%f" % x).rstrip("0").rstrip(".")
