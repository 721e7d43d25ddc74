"""The accelerator check in its reduced CPU form: every kernel (the Pallas ones interpreted)
against the reference, and the train-step measurements, through the command users run."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_device_check_runs_reduced_on_cpu(tmp_path):
  cache = tmp_path / "cache"
  result = subprocess.run(
      [sys.executable, "-m", "transformer.device_check", f"--out={tmp_path}", "--steps=2",
       "--warmup=1", f"--cache_dir={cache}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  out = result.stdout
  assert "reduced shapes" in out and "all checks passed" in out
  records = [json.loads(line)
             for line in (tmp_path / "device_check.jsonl").read_text().splitlines()]
  checked = {(r["kernel"], r["call"]) for r in records if "output_rel_err" in r}
  assert {("xla", "packed causal"), ("pallas_gpu", "packed causal"),
          ("splash", "packed causal")} <= checked
  steps = [r for r in records if "step_s" in r]
  assert [r["case"] for r in steps] == ["small", "small packed scanned"]
  assert all(r["mfu"] is None and r["peak"].startswith("unknown") for r in steps)
  assert any(cache.iterdir()), "the persistent compilation cache holds the compiled steps"
