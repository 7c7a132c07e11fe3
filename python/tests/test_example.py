"""examples/quickstart.py runs and prints what the README shows."""

import os
import subprocess
import sys
import unittest

from . import engine

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExampleTest(unittest.TestCase):
    def test_the_quickstart_runs(self):
        engine.setup()
        r = subprocess.run([sys.executable, os.path.join(HERE, "examples", "quickstart.py")], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=HERE), timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "499500")
        self.assertRegex(lines[1], r"^pi is about 3\.1")
        self.assertEqual(lines[3:], ["exit code 0", "remote KeyError 'missing'"])
        self.assertIn("1 task failed", r.stderr)


if __name__ == "__main__":
    unittest.main()
