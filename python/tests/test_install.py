"""pip install ./python works offline: the package builds with its own
standard-library backend and nothing is fetched."""

import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class InstallTest(unittest.TestCase):
    def test_pip_installs_the_package_without_an_index(self):
        with tempfile.TemporaryDirectory() as d:
            venv = os.path.join(d, "venv")
            r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], capture_output=True, text=True)
            if r.returncode != 0:
                self.skipTest("no venv module with pip here: %s" % r.stderr.strip()[-200:])
            py = os.path.join(venv, "bin", "python")
            r = subprocess.run([py, "-m", "pip", "install", "--no-index", "--no-deps", HERE], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            r = subprocess.run([py, "-c", "import meadowrun, sys; print(meadowrun.__file__); print(meadowrun.run_map.__name__)"],
                               capture_output=True, text=True, cwd=d)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(os.path.join(venv, "lib"), r.stdout)
            self.assertIn("run_map", r.stdout)


if __name__ == "__main__":
    unittest.main()
