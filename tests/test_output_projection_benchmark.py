"""benchmarks/output_projection.py: its three forms of greedy's last step agree (the script checks
that before timing) and each gets its line."""

import os
import subprocess
import sys

PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks",
                    "output_projection.py")


def test_the_three_forms_agree_and_are_timed():
  run = subprocess.run([sys.executable, PATH, "--rows=8", "--steps=2", "--repeats=1"],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert run.returncode == 0, run.stderr[-2000:]
  lines = [line for line in run.stdout.splitlines() if "ms a step" in line]
  assert [line.split(" median")[0].strip() for line in lines] == [
      "now", "table [D, V]", "logits [V, rows]"]
  assert lines[0].endswith("1.00x now")
