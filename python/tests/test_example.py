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

    def test_the_retries_example_runs(self):
        engine.setup()
        r = subprocess.run([sys.executable, os.path.join(HERE, "examples", "retries.py")], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=HERE), timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        # The first four come as the tasks complete, in any order.
        self.assertEqual(sorted(lines[:4]), ["task 0: 1 (attempt 2)", "task 1: 4 (attempt 1)", "task 2: 9 (attempt 2)",
                                             "task 3: 16 (attempt 1)"])
        self.assertEqual(lines[4:], ["failed: task 1 raised ZeroDivisionError: integer division or modulo by zero",
                                     "detached job's results: [2, 3, 4]"])
        self.assertIn("task 0 attempt 1 failed (error), retrying", r.stderr)


if __name__ == "__main__":
    unittest.main()
