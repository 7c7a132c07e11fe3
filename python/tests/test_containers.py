"""Functions and commands in a container image on Local(), with the
engine and registry of scripts/containers.sh up DIR
(MEADOWRUN_CONTAINERS=DIR). Skipped without it, or failed when
MEADOWRUN_REQUIRE_CONTAINERS=1."""

import asyncio
import os
import shutil
import socket
import unittest

import meadowrun
from meadowrun import ContainerInterpreter, Deployment, EnvSecret, Local

from . import engine
from .test_local import Base

DIR = os.environ.get("MEADOWRUN_CONTAINERS")


def containers():
    return engine.read_env_file(os.path.join(DIR, "containers.env"))


# A module that travels into the containers: where a function ran.
CTRFNS = """
import os, socket, sys

def where():
    # The mount point meadowrun gives its containers, the machine's
    # name, Debian's version, Python's.
    with open("/etc/debian_version") as f:
        debian = f.read().strip()
    return os.path.isdir("/.meadowrun"), socket.gethostname(), debian, list(sys.version_info[:2])
"""


class ContainerTest(Base):
    @classmethod
    def setUpClass(cls):
        if not DIR:
            if os.environ.get("MEADOWRUN_REQUIRE_CONTAINERS") == "1":
                raise AssertionError("MEADOWRUN_CONTAINERS is not set (MEADOWRUN_REQUIRE_CONTAINERS=1): "
                                     "start the engine with scripts/containers.sh up DIR")
            raise unittest.SkipTest("MEADOWRUN_CONTAINERS is not set: start the engine with scripts/containers.sh up DIR")
        super().setUpClass()
        env = containers()
        cls.saved = {k: os.environ.get(k) for k in ("DOCKER_HOST", "MR_TEST_REGISTRY_USER", "MR_TEST_REGISTRY_PASSWORD")}
        # The meadowrun program drives the engine DOCKER_HOST names and
        # reads the registry's credentials from the variables EnvSecret
        # names.
        os.environ["DOCKER_HOST"] = env["DOCKER_HOST"]
        os.environ["MR_TEST_REGISTRY_USER"] = env["REGISTRY_USER"]
        os.environ["MR_TEST_REGISTRY_PASSWORD"] = env["REGISTRY_PASSWORD"]
        cls.secret = EnvSecret("MR_TEST_REGISTRY_USER", "MR_TEST_REGISTRY_PASSWORD")
        cls.repo, cls.tag = env["DEBIAN_IMAGE"].rsplit(":", 1)
        cls.digest = env["DEBIAN_DIGEST"].rsplit("@", 1)[1]

    @classmethod
    def tearDownClass(cls):
        for k, v in cls.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def code_dir(self, with_cloudpickle=True):
        """Changes to a working directory whose files travel into the
        container: ctrfns.py and, unless told not to, cloudpickle, which
        the test image lacks; returns their globs."""
        import cloudpickle

        d = os.path.join(self.dir, "code")
        os.makedirs(d)
        with open(os.path.join(d, "ctrfns.py"), "w") as f:
            f.write(CTRFNS)
        if with_cloudpickle:
            shutil.copytree(os.path.dirname(cloudpickle.__file__), os.path.join(d, "cloudpickle"),
                            ignore=shutil.ignore_patterns("__pycache__"))
        cwd = os.getcwd()
        os.chdir(d)
        self.addCleanup(os.chdir, cwd)
        return ["ctrfns.py", "cloudpickle"] if with_cloudpickle else ["ctrfns.py"]

    def deployment(self, globs):
        return asyncio.run(Deployment.mirror_local(interpreter=ContainerInterpreter(self.repo, self.tag, self.secret), globs=globs))

    def test_a_closure_runs_on_the_images_python(self):
        dep = self.deployment(self.code_dir())
        k = 5
        got = asyncio.run(meadowrun.run_function(lambda x: (x * k, __import__("ctrfns").where()), Local(), deployment=dep, args=[3]))
        self.assertEqual(got[0], 15)
        mounted, hostname, debian, version = got[1]
        self.assertTrue(mounted, "no /.meadowrun: the function did not run in a container")
        self.assertNotEqual(hostname, socket.gethostname())
        self.assertRegex(debian, r"^12\.")
        self.assertEqual(version[0], 3)

    def test_a_named_function_and_a_map_run_in_the_image_with_their_exceptions(self):
        dep = self.deployment(self.code_dir())
        got = asyncio.run(meadowrun.run_map(lambda x: (x, __import__("ctrfns").where()[0]), [1, 2, 3], Local(), deployment=dep))
        self.assertEqual(got, [(1, True), (2, True), (3, True)])
        mounted, _, _, _ = asyncio.run(meadowrun.run_function("ctrfns.where", Local(), deployment=dep))
        self.assertTrue(mounted)

        def fails():
            raise LookupError("not in the image")

        with self.assertRaises(meadowrun.TaskException) as cm:
            asyncio.run(meadowrun.run_function(fails, Local(), deployment=dep))
        self.assertEqual((cm.exception.exc_type, cm.exception.message), ("LookupError", "not in the image"))
        self.assertIn("in fails", cm.exception.traceback)

    def test_environment_variables_and_an_image_named_by_digest_reach_a_function(self):
        globs = self.code_dir()
        for interp in (ContainerInterpreter(self.repo, self.tag, self.secret),
                       meadowrun.ContainerAtDigestInterpreter(self.repo, self.digest, self.secret)):
            dep = asyncio.run(Deployment.mirror_local(interpreter=interp, globs=globs, environment_variables={"MR_GREETING": "bonjour"}))
            got = asyncio.run(meadowrun.run_function(lambda: (os.environ.get("MR_GREETING"), __import__("ctrfns").where()[0]), Local(),
                                                     deployment=dep))
            self.assertEqual(got, ("bonjour", True), interp)

    def test_a_sidecar_reaches_the_engine(self):
        # The scratch image's command prints a line and exits at once: the
        # job fails saying so, which shows the sidecar was started.
        srepo, stag = containers()["SCRATCH_IMAGE"].rsplit(":", 1)
        dep = self.deployment(self.code_dir())
        with self.assertRaises(meadowrun.MeadowrunException) as cm:
            asyncio.run(meadowrun.run_function(lambda: 1, Local(), deployment=dep,
                                               sidecar_containers=ContainerInterpreter(srepo, stag, self.secret)))
        self.assertIn("sidecar", str(cm.exception))
        self.assertIn("hello from scratch", str(cm.exception))

    def test_without_cloudpickle_in_the_image_the_error_says_what_to_do(self):
        dep = self.deployment(self.code_dir(with_cloudpickle=False))
        with self.assertRaises(meadowrun.TaskException) as cm:
            asyncio.run(meadowrun.run_function(lambda: 1, Local(), deployment=dep))
        self.assertIn("needs cloudpickle", str(cm.exception))

    def test_a_command_runs_in_the_image(self):
        dep = Deployment.container_image(self.repo, self.tag, self.secret, environment_variables={"GREETING": "hello"})
        jc = asyncio.run(meadowrun.run_command(
            ["sh", "-c", 'test -d /.meadowrun && echo "$GREETING from $(hostname), Debian $(cat /etc/debian_version)"'], Local(),
            deployment=dep))
        self.assertEqual(jc.return_code, 0)
        self.assertRegex(self.out.getvalue(), r"hello from [0-9a-f]{12}, Debian 12\.")
        self.assertNotIn(socket.gethostname(), self.out.getvalue())
        with self.assertRaises(meadowrun.MeadowrunException) as cm:
            asyncio.run(meadowrun.run_command(["sh", "-c", "exit 4"], Local(), deployment=dep))
        self.assertEqual(cm.exception.return_code, 4)

    def test_an_image_that_is_not_there_is_a_clear_error(self):
        dep = Deployment.container_image(self.repo, "no-such-tag", self.secret)
        with self.assertRaises(meadowrun.MeadowrunException) as cm:
            asyncio.run(meadowrun.run_command(["true"], Local(), deployment=dep))
        self.assertIn("no-such-tag", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
