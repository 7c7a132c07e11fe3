"""The entry points against Ssh() machines of the simulated network
(scripts/sshnet.sh up DIR; MEADOWRUN_SSHNET=DIR). Skipped without it."""

import asyncio
import os
import subprocess
import tempfile
import unittest

import meadowrun
from meadowrun import Deployment, PipRequirementsFile, PreinstalledInterpreter, Ssh

from . import engine
from .test_local import IN_ENV, Base, cloudpickle_wheels, make_wheel

NET = os.environ.get("MEADOWRUN_SSHNET")


def sshnet():
    return engine.read_env_file(os.path.join(NET, "sshnet.env"))


@unittest.skipUnless(NET, "MEADOWRUN_SSHNET is not set: start the machines with scripts/sshnet.sh up DIR")
class SshTest(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        n = sshnet()
        cls.host = Ssh(["root@" + n["SSHNET_H1"], "root@" + n["SSHNET_H2"]], identity_files=[n["SSHNET_KEY"]],
                       known_hosts_files=[n["SSHNET_KNOWN_HOSTS"]])
        # The machines' python3 has no cloudpickle: an environment with it,
        # from a wheelhouse in /tmp, which the machines share.
        req = os.path.join(tempfile.mkdtemp(dir=engine.setup()), "requirements.txt")
        with open(req, "w") as f:
            f.write("--no-index\n--find-links %s\ncloudpickle\n" % cloudpickle_wheels())
        cls.req = req
        cls.dep = asyncio.run(Deployment.mirror_local(interpreter=PipRequirementsFile(req)))

    def test_a_command_runs_on_a_machine(self):
        jc = asyncio.run(meadowrun.run_command(["sh", "-c", "echo on ${SSH_CONNECTION##* }"], self.host))
        self.assertEqual(jc.return_code, 0)
        self.assertIn("on 22", self.out.getvalue())

    def test_a_command_runs_in_a_requirements_environment_on_a_machine(self):
        # The wheelhouse is in /tmp, which the machines share.
        wheels = make_wheel(os.path.join(tempfile.mkdtemp(dir=engine.setup()), "wheels"), "mrcmdreq",
                            "def hi():\n    return 'hi from mrcmdreq'\n")
        req = os.path.join(os.path.dirname(wheels), "requirements.txt")
        with open(req, "w") as f:
            f.write("--no-index\n--find-links %s\nmrcmdreq==1.0\n" % wheels)
        one = Ssh(self.host.hosts[:1], identity_files=self.host.identity_files, known_hosts_files=self.host.known_hosts_files)
        dep = Deployment.mirror_local(interpreter=PipRequirementsFile(req))
        jc = asyncio.run(meadowrun.run_command(["sh", "-c", 'echo "on ${SSH_CONNECTION##* }"; exec "$@"', "sh"] + IN_ENV, one,
                                               deployment=dep))
        self.assertEqual(jc.return_code, 0)
        self.assertIn("on 22\nhi from mrcmdreq in its env: True\n", self.out.getvalue())

    def test_a_closure_maps_over_the_machines_with_exceptions_and_retries(self):
        k = 3
        marks = tempfile.mkdtemp(dir="/tmp")

        def f(x):
            p = os.path.join(marks, str(x))
            if x == 2 and not os.path.exists(p):
                open(p, "w").close()
                raise OSError("first try of 2")
            if x == 4:
                raise KeyError("four")
            return x * k

        with self.assertRaises(meadowrun.RunMapTasksFailedException) as cm:
            asyncio.run(meadowrun.run_map(f, [1, 2, 3, 4], self.host, deployment=self.dep, max_num_task_attempts=2))
        (t,) = cm.exception.failed_tasks
        self.assertEqual((t.task_id, t.attempt, t.exception[0]), (3, 2, "KeyError"))
        self.assertEqual(asyncio.run(meadowrun.run_map(f, [1, 2, 3], self.host, deployment=self.dep)), [3, 6, 9])

    def test_a_named_function_travels_with_globs(self):
        cwd = os.getcwd()
        os.chdir(self.dir)
        self.addCleanup(os.chdir, cwd)
        with open("mrglobbed.py", "w") as f:
            f.write("import os\ndef where(x):\n    return [x, os.path.basename(os.getcwd()) != %r]\n" % os.path.basename(self.dir))
        dep = Deployment.mirror_local(interpreter=PipRequirementsFile(self.req), globs=["mrglobbed.py"])
        self.assertEqual(asyncio.run(meadowrun.run_map("mrglobbed.where", [1, 2], self.host, deployment=dep)), [[1, True], [2, True]])

    def test_without_cloudpickle_on_the_machines_the_error_says_what_to_do(self):
        # An interpreter sure to lack cloudpickle, whatever the machines'
        # python3 has installed: a virtualenv of it without site-packages,
        # in /tmp, which the machines share.
        venv = os.path.join(tempfile.mkdtemp(dir="/tmp"), "bare")
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
        dep = asyncio.run(Deployment.mirror_local(interpreter=PreinstalledInterpreter(os.path.join(venv, "bin", "python"))))
        with self.assertRaises(meadowrun.TaskException) as cm:
            asyncio.run(meadowrun.run_function(lambda: 1, self.host, deployment=dep))
        self.assertIn("needs cloudpickle", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
