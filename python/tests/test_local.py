"""The reference's entry points against Local(): commands, functions
(named, lambdas, closures), maps, errors, retries and deployments."""

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
import zipfile

import meadowrun
from meadowrun import Deployment, Local, Resources

from . import engine


def run(coro):
    return asyncio.run(coro)


class Point:
    """A result that is not JSON: it comes back pickled."""

    def __init__(self, x, y):
        self.x, self.y = x, y


def add(a, b=0):
    return a + b


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = engine.setup()

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.tmp)
        self.out = io.StringIO()
        self.err = io.StringIO()
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.redirect_stdout(self.out))
        stack.enter_context(contextlib.redirect_stderr(self.err))
        self.addCleanup(stack.close)

    def module(self, name, source):
        """Writes a module importable through additional_sys_paths."""
        with open(os.path.join(self.dir, name + ".py"), "w") as f:
            f.write(textwrap.dedent(source))
        return Deployment.mirror_local(additional_sys_paths=[self.dir])


class RunCommandTest(Base):
    def test_a_command_that_succeeds_returns_its_job_completion(self):
        jc = run(meadowrun.run_command("sh -c 'echo hello $NAME'", Local(),
                                       deployment=Deployment.mirror_local(environment_variables={"NAME": "world"})))
        self.assertIsInstance(jc, meadowrun.JobCompletion)
        self.assertEqual(jc.return_code, 0)
        self.assertIn("hello world\n", self.out.getvalue())
        with open(jc.log_file_name) as f:
            self.assertIn("hello world", f.read())
        self.assertTrue(jc.job_id)

    def test_a_command_that_fails_raises_with_its_exit_code(self):
        with self.assertRaises(meadowrun.MeadowrunException) as cm:
            run(meadowrun.run_command(["sh", "-c", "exit 3"], Local()))
        self.assertEqual(cm.exception.return_code, 3)
        self.assertIn("exited with code 3", str(cm.exception))

    def test_resources_no_machine_has_are_refused_before_anything_runs(self):
        with self.assertRaises(meadowrun.MeadowrunException) as cm:
            run(meadowrun.run_command("true", Local(), Resources(logical_cpu=4096)))
        self.assertIn("can never fit", str(cm.exception))

    def test_context_variables_reach_the_command_as_json(self):
        script = "import json, os; print(sorted(json.loads(os.environ['MEADOWRUN_CONTEXT_VARIABLES']).items()))"
        run(meadowrun.run_command([sys.executable, "-c", script], Local(), context_variables={"b": [1, 2], "a": "x"}))
        self.assertIn("[('a', 'x'), ('b', [1, 2])]", self.out.getvalue())
        with self.assertRaises(TypeError):
            run(meadowrun.run_command("true", Local(), context_variables={"f": object()}))

    def test_a_detached_command_is_submitted_and_waited_for(self):
        job = run(meadowrun.run_command("sh -c 'echo detached'", Local(), wait_for_result=False))
        self.assertIsInstance(job, meadowrun.Job)
        self.assertIn("submitted; follow it with: meadowrun attach", self.err.getvalue())
        jc = run(job.wait())
        self.assertEqual((jc.return_code, jc.job_id), (0, job.job_id))
        self.assertIn("detached", self.out.getvalue())


class PortsTest(Base):
    def test_a_port_another_program_holds_is_refused_for_functions_and_maps(self):
        import socket

        with socket.socket() as s:
            s.bind(("", 0))
            s.listen()
            port = s.getsockname()[1]
            for call in (lambda: meadowrun.run_function(lambda: 1, Local(), ports=port),
                         lambda: meadowrun.run_map(lambda x: x, [1, 2], Local(), ports=[str(port)])):
                with self.assertRaises(meadowrun.MeadowrunException) as cm:
                    run(call())
                self.assertIn(str(port), str(cm.exception))
        self.assertEqual(run(meadowrun.run_function(lambda: 2, Local(), ports=port)), 2)


class RunFunctionTest(Base):
    def test_a_lambda_closure_runs_with_args_and_kwargs(self):
        k = 10
        self.assertEqual(run(meadowrun.run_function(lambda x, y=1: (x + y) * k, Local(), args=[2], kwargs={"y": 3})), 50)

    def test_a_module_function_is_pickled_by_reference_and_imported(self):
        self.assertEqual(run(meadowrun.run_function(add, Local(), args=[2, 5])), 7)

    def test_a_named_function_is_imported_in_the_worker(self):
        dep = self.module("mrnamed", """
            def greet(name, punct="!"):
                print("greeting", name)
                return "hello " + name + punct
        """)
        self.assertEqual(run(meadowrun.run_function("mrnamed.greet", Local(), deployment=dep, args=["ada"], kwargs={"punct": "?"})),
                         "hello ada?")
        self.assertIn("greeting ada", self.out.getvalue())

    def test_results_that_are_not_json_come_back(self):
        p = run(meadowrun.run_function(lambda: Point(1, 2), Local()))
        self.assertEqual((type(p).__name__, p.x, p.y), ("Point", 1, 2))
        self.assertIsNone(run(meadowrun.run_function(lambda: None, Local())))
        self.assertEqual(run(meadowrun.run_function(lambda: {"a": (1, b"x")}, Local())), {"a": (1, b"x")})

    def test_an_exception_comes_back_with_its_type_message_and_traceback(self):
        def fails(x):
            raise ValueError("bad value %d" % x)

        with self.assertRaises(meadowrun.TaskException) as cm:
            run(meadowrun.run_function(fails, Local(), args=[7]))
        e = cm.exception
        self.assertEqual(e.exc_type, "ValueError")
        self.assertEqual(e.message, "bad value 7")
        self.assertIn("in fails", e.traceback)
        self.assertIn("raise ValueError", e.traceback)
        self.assertIsInstance(e, meadowrun.MeadowrunException)

    def test_an_unknown_named_function_is_a_clear_error(self):
        with self.assertRaises(meadowrun.TaskException) as cm:
            run(meadowrun.run_function("nosuchpkg.mod.f", Local()))
        self.assertIn("nosuchpkg", str(cm.exception))
        with self.assertRaises(ValueError):
            run(meadowrun.run_function("not a name", Local()))

    def test_a_preinstalled_interpreter_runs_the_function(self):
        dep = Deployment.preinstalled_interpreter(sys.executable)
        self.assertEqual(run(meadowrun.run_function(lambda: sys.version_info[:2], Local(), deployment=dep)), sys.version_info[:2])

    def test_an_awaitable_deployment_is_awaited(self):
        async def main():
            return await meadowrun.run_function(lambda: 1, Local(), deployment=Deployment.mirror_local())

        self.assertEqual(run(main()), 1)


class RunMapTest(Base):
    def test_results_come_in_the_order_of_the_args(self):
        self.assertEqual(run(meadowrun.run_map(lambda x: x * x, range(10), Local(), num_concurrent_tasks=2)),
                         [x * x for x in range(10)])

    def test_an_empty_map_returns_an_empty_list(self):
        self.assertEqual(run(meadowrun.run_map(lambda x: x, [], Local())), [])

    def test_failed_tasks_are_named_after_every_task_ended(self):
        marks = self.dir

        def f(x):
            open(os.path.join(marks, str(x)), "w").close()
            if x % 2:
                raise KeyError(x)
            return x

        with self.assertRaises(meadowrun.RunMapTasksFailedException) as cm:
            run(meadowrun.run_map(f, [0, 1, 2, 3], Local(), num_concurrent_tasks=2))
        self.assertEqual(sorted(t.task_id for t in cm.exception.failed_tasks), [1, 3])
        self.assertEqual(cm.exception.failed_tasks[0].exception[0], "KeyError")
        self.assertIn("2 of 4 tasks failed", str(cm.exception))
        self.assertEqual(sorted(os.listdir(marks)), ["0", "1", "2", "3"])

    def test_as_completed_yields_every_task_result(self):
        async def main():
            return [r async for r in meadowrun.run_map_as_completed(lambda x: 1 / x, [1, 0, 4], Local())]

        rs = sorted(run(main()), key=lambda r: r.task_id)
        self.assertEqual([r.is_success for r in rs], [True, False, True])
        self.assertEqual(rs[2].result_or_raise(), 0.25)
        self.assertEqual(rs[1].exception[0], "ZeroDivisionError")
        with self.assertRaises(meadowrun.TaskException) as cm:
            rs[1].result_or_raise()
        self.assertIn("division by zero", str(cm.exception))

    def test_failed_tasks_are_retried(self):
        marks = self.dir

        def flaky(x):
            p = os.path.join(marks, "tried-%d" % x)
            if not os.path.exists(p):
                open(p, "w").close()
                raise RuntimeError("first try of %d fails" % x)
            return x

        async def main():
            return [r async for r in meadowrun.run_map_as_completed(flaky, [1, 2], Local(), max_num_task_attempts=2)]

        rs = sorted(run(main()), key=lambda r: r.task_id)
        self.assertEqual([(r.result, r.attempt) for r in rs], [(1, 2), (2, 2)])
        self.assertEqual(run(meadowrun.run_map(flaky, [1, 2], Local())), [1, 2])


class MemoryTest(Base):
    def test_a_task_over_its_memory_is_killed_and_retried_with_more(self):
        with self.assertRaises(meadowrun.TaskException) as cm:
            run(meadowrun.run_function(lambda: len(bytearray(400 << 20)), Local(), Resources(memory_gb=0.2)))
        self.assertEqual(cm.exception.exc_type, "worker-oom")
        self.assertIn("exceeding its memory limit", str(cm.exception))

        async def main():
            return [r async for r in meadowrun.run_map_as_completed(lambda n: len(bytearray(n << 20)), [300], Local(),
                                                                    Resources(memory_gb=0.2), max_num_task_attempts=2,
                                                                    retry_with_more_memory=True)]

        (r,) = run(main())
        self.assertEqual((r.is_success, r.attempt, r.result), (True, 2, 300 << 20))


class DetachedTest(Base):
    def test_a_detached_function_is_attached_to_from_another_process(self):
        k = 7
        job = run(meadowrun.run_function(lambda x: x * k, Local(), args=[6], wait_for_result=False))
        self.assertIsInstance(job, meadowrun.Job)
        r = subprocess.run([sys.executable, "-c", "import asyncio, meadowrun; print(asyncio.run(meadowrun.Job(%r).result()))" % job.job_id],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        self.assertEqual((r.returncode, r.stdout), (0, "42\n"), r.stderr)

    def test_a_detached_map_gives_its_results_and_failures(self):
        job = run(meadowrun.run_map(lambda x: 10 // x, [1, 2, 5], Local(), wait_for_result=False))
        self.assertEqual(run(job.results()), [10, 5, 2])
        job = run(meadowrun.run_map(lambda x: 10 // x, [1, 0], Local(), wait_for_result=False))
        with self.assertRaises(meadowrun.RunMapTasksFailedException) as cm:
            run(job.results())
        self.assertEqual([(t.task_id, t.exception[0]) for t in cm.exception.failed_tasks], [(1, "ZeroDivisionError")])


    def test_a_detached_job_is_cancelled(self):
        import time

        job = run(meadowrun.run_map(lambda x: time.sleep(60), [1, 2], Local(), wait_for_result=False))
        start = time.monotonic()
        run(job.cancel())
        with self.assertRaises(meadowrun.MeadowrunException) as cm:
            run(job.results())
        self.assertEqual(cm.exception.return_code, 130)
        self.assertLess(time.monotonic() - start, 30)


def make_wheel(wheels, name, source):
    """Writes a pure-Python wheel of package name 1.0 with source as its
    __init__.py into the directory wheels."""
    os.makedirs(wheels, exist_ok=True)
    with zipfile.ZipFile(os.path.join(wheels, "%s-1.0-py3-none-any.whl" % name), "w") as z:
        z.writestr("%s/__init__.py" % name, source)
        z.writestr("%s-1.0.dist-info/METADATA" % name, "Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % name)
        z.writestr("%s-1.0.dist-info/WHEEL" % name, "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("%s-1.0.dist-info/RECORD" % name, "")
    return wheels


# A command in a requirements environment: its python is the
# environment's, which has the package.
IN_ENV = ["python", "-c", "import os, sys, mrcmdreq; print(mrcmdreq.hi(), 'in its env:', sys.prefix == os.environ['VIRTUAL_ENV'])"]


class RequirementsDeploymentTest(Base):
    def test_a_pip_requirements_file_from_a_local_wheelhouse_is_installed(self):
        wheels = make_wheel(os.path.join(self.dir, "wheels"), "mrpyreq", "def hi():\n    return 'hi from mrpyreq 1.0'\n")
        req = os.path.join(self.dir, "requirements.txt")
        with open(req, "w") as f:
            # The worker needs cloudpickle for the pickled function.
            f.write("--no-index\n--find-links %s\n--find-links %s\nmrpyreq==1.0\ncloudpickle\n" % (wheels, cloudpickle_wheels()))

        dep = Deployment.mirror_local(interpreter=meadowrun.PipRequirementsFile(req))
        self.assertEqual(run(meadowrun.run_function("mrpyreq.hi", Local(), deployment=dep)), "hi from mrpyreq 1.0")

    def test_a_command_runs_in_the_requirements_environment(self):
        wheels = make_wheel(os.path.join(self.dir, "wheels"), "mrcmdreq", "def hi():\n    return 'hi from mrcmdreq'\n")
        req = os.path.join(self.dir, "requirements.txt")
        with open(req, "w") as f:
            f.write("--no-index\n--find-links %s\nmrcmdreq==1.0\n" % wheels)
        dep = Deployment.mirror_local(interpreter=meadowrun.PipRequirementsFile(req))
        jc = run(meadowrun.run_command(IN_ENV, Local(), deployment=dep))
        self.assertEqual(jc.return_code, 0)
        self.assertIn("hi from mrcmdreq in its env: True\n", self.out.getvalue())
        # Without the environment the package is not there.
        with self.assertRaises(meadowrun.MeadowrunException) as cm:
            run(meadowrun.run_command(["python3", "-c", "import mrcmdreq"], Local()))
        self.assertEqual(cm.exception.return_code, 1)


def cloudpickle_wheels():
    """A directory with a cloudpickle wheel made from the installed one."""
    import cloudpickle

    d = tempfile.mkdtemp(dir=engine.setup())
    src = os.path.dirname(cloudpickle.__file__)
    v = cloudpickle.__version__
    with zipfile.ZipFile(os.path.join(d, "cloudpickle-%s-py3-none-any.whl" % v), "w") as z:
        for f in sorted(os.listdir(src)):
            if f.endswith(".py"):
                z.write(os.path.join(src, f), "cloudpickle/" + f)
        info = "cloudpickle-%s.dist-info/" % v
        z.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: cloudpickle\nVersion: %s\n" % v)
        z.writestr(info + "WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(info + "RECORD", "")
    return d


class NotServedTest(unittest.TestCase):
    def test_hosts_the_engine_cannot_serve_raise_naming_themselves(self):
        for host in (meadowrun.AllocAzureVM(), meadowrun.AllocCloudInstance("AzureVM")):
            with self.subTest(host=type(host).__name__):
                with self.assertRaises(NotImplementedError) as cm:
                    run(meadowrun.run_command("true", host))
                self.assertIn(type(host).__name__, str(cm.exception))

    def test_kubernetes_becomes_the_clis_url_and_its_errors_are_the_engines(self):
        k = meadowrun.Kubernetes(kube_config_context="my ctx", kubernetes_namespace="team", reusable_pods=False)
        self.assertEqual(k.host_url(), "k8s://my%20ctx?namespace=team&reusable=false")
        self.assertEqual(meadowrun.Kubernetes().host_url(), "k8s://?namespace=default")
        with self.assertRaises(NotImplementedError) as cm:
            run(meadowrun.run_command("true", meadowrun.Kubernetes(pod_customization=lambda pod: pod)))
        self.assertIn("pod_customization", str(cm.exception))
        s3 = meadowrun.GenericStorageBucketSpec("progs", "http://minio:9000", "http://minio.svc:9000", "minio-key")
        self.assertEqual(meadowrun.Kubernetes(storage_spec=s3, kubernetes_namespace="team").host_url(),
                         "k8s://?namespace=team&storage=s3&bucket=progs&endpoint=http%3A%2F%2Fminio%3A9000"
                         "&endpoint_in_cluster=http%3A%2F%2Fminio.svc%3A9000&secret=minio-key")
        self.assertEqual(meadowrun.Kubernetes(storage_spec=meadowrun.GoogleBucketSpec("b")).host_url(),
                         "k8s://?namespace=default&storage=gcs&bucket=b")
        # The engine opens the cluster: without a kubeconfig it says which
        # file it looked for.
        missing = os.path.join(tempfile.mkdtemp(), "no-such-kubeconfig")
        saved = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = missing
        try:
            with self.assertRaises(meadowrun.MeadowrunException) as cm:
                run(meadowrun.run_command("true", meadowrun.Kubernetes()))
        finally:
            if saved is None:
                del os.environ["KUBECONFIG"]
            else:
                os.environ["KUBECONFIG"] = saved
        self.assertIn("no-such-kubeconfig", str(cm.exception))

    def test_ec2_becomes_the_clis_url_and_its_errors_are_the_engines(self):
        h = meadowrun.AllocEC2Instance("us-east-2", "ami-1", "subnet-a,subnet-b", ["sg-1", "sg-2"], "prof",
                                       key_name="k", key_file="/keys/k.pem")
        self.assertEqual(h.host_url(), "ec2://us-east-2?ami=ami-1&subnet=subnet-a&subnet=subnet-b&sg=sg-1&sg=sg-2"
                                       "&profile=prof&key_name=k&key=%2Fkeys%2Fk.pem")
        self.assertEqual(meadowrun.AllocCloudInstance("EC2", "eu-west-1").host_url(), "ec2://eu-west-1")
        with self.assertRaises(ValueError):
            run(meadowrun.run_command("true", meadowrun.AllocEC2Instance()))
        # The engine opens the host: without credentials it says which
        # variables to set, before any AWS call.
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
        try:
            with self.assertRaises(meadowrun.MeadowrunException) as cm:
                run(meadowrun.run_command("true", meadowrun.AllocEC2Instance("us-east-2", "ami-1")))
        finally:
            os.environ.update(saved)
        self.assertIn("no AWS credentials", str(cm.exception))
        self.assertIn("AWS_ACCESS_KEY_ID", str(cm.exception))

    def test_deployments_the_engine_cannot_serve_raise_naming_the_piece(self):
        with self.assertRaises(NotImplementedError) as cm:
            Deployment.git_repo("https://example.invalid/repo")
        self.assertIn("git_repo", str(cm.exception))
        with self.assertRaises(NotImplementedError) as cm:
            run(Deployment.mirror_local(interpreter=meadowrun.LocalCondaInterpreter("env")))
        self.assertIn("LocalCondaInterpreter", str(cm.exception))
        with self.assertRaises(NotImplementedError) as cm:
            Deployment.container_image("python", "3.11", meadowrun.AzureSecret("s")).python_flags(Local())
        self.assertIn("AzureSecret", str(cm.exception))

    def test_aws_secret_becomes_the_clis_flag(self):
        flags = Deployment.container_image("python", "3.11", meadowrun.AwsSecret("reg")).python_flags(Local())
        self.assertIn("--registry-aws-secret", flags)
        self.assertEqual(flags[flags.index("--registry-aws-secret") + 1], "reg")

    def test_ssh_hosts_become_the_clis_url(self):
        self.assertEqual(meadowrun.Ssh(["root@10.0.0.1", "u@h:2222"], identity_files=["/k"], timeout="5s").host_url(),
                         "ssh://root@10.0.0.1,u@h:2222?key=%2Fk&timeout=5s")
        self.assertEqual(meadowrun.Ssh("a@b").host_url(), "ssh://a@b")
        self.assertEqual(Local().host_url(), "local")
        self.assertEqual(Local(cpu=2, memory_gb=1.5).host_url(), "local://?cpu=2&memory=1.5")

    def test_resources_become_the_clis_flags(self):
        self.assertEqual(Resources(logical_cpu=2, memory_gb=0.5, max_eviction_rate=0, flags_required="avx2").flags(),
                         ["--cpu", "2.0", "--memory", "0.5", "--max-eviction-rate", "0.0", "--flags", "avx2"])

    def test_a_missing_program_is_a_clear_error(self):
        old = os.environ.get("MEADOWRUN_BIN")
        os.environ["MEADOWRUN_BIN"] = "/nonexistent/meadowrun"
        try:
            with self.assertRaises(meadowrun.MeadowrunException) as cm:
                run(meadowrun.run_command("true", Local()))
            self.assertIn("MEADOWRUN_BIN", str(cm.exception))
        finally:
            if old is None:
                del os.environ["MEADOWRUN_BIN"]
            else:
                os.environ["MEADOWRUN_BIN"] = old


if __name__ == "__main__":
    unittest.main()
