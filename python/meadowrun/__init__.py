"""meadowrun: the reference Meadowrun Python API on the meadowrun Go
engine. Each run_* call runs the meadowrun program (MEADOWRUN_BIN, or
meadowrun on PATH), which schedules, retries and enforces resources."""

from ._deployment import (
    MEADOWRUN_INTERPRETER,
    AwsSecret,
    AzureSecret,
    CondaEnvironmentFile,
    ContainerAtDigestInterpreter,
    ContainerInterpreter,
    ContainerInterpreterBase,
    Deployment,
    EnvSecret,
    InterpreterSpecFile,
    LocalCondaInterpreter,
    LocalCurrentInterpreter,
    LocalInterpreter,
    LocalPipInterpreter,
    PipRequirementsFile,
    PoetryProjectPath,
    PreinstalledInterpreter,
    Resources,
    Secret,
)
from ._hosts import (
    AllocAzureVM,
    AllocCloudInstance,
    AllocEC2Instance,
    AllocVM,
    GenericStorageBucketSpec,
    GoogleBucketSpec,
    Host,
    Kubernetes,
    Local,
    Ssh,
    StorageBucketSpec,
)
from ._run import (
    Job,
    JobCompletion,
    MeadowrunException,
    RunMapTasksFailedException,
    TaskException,
    TaskResult,
    meadowrun_binary,
    run_command,
    run_function,
    run_map,
    run_map_as_completed,
)

__all__ = [n for n in dir() if not n.startswith("_")]
