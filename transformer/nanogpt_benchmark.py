"""Time to finish, final validation loss and training tokens/s: nanoGPT's CPU recipe and ours.

    python -m transformer.nanogpt_benchmark --nanogpt_dir=../peers/nanoGPT
        --peer_python=../peers/venv/bin/python --data_dir=../shared/data/tinyshakespeare
        [--workdir_root=/tmp/x] [--repeats=1] [--ours_flag=--config.num_train_steps=2000]
        [--output=results.json]          (one command line; --ours_flag repeats)

Runs, one after the other (alternating when --repeats > 1): (a) nanoGPT's README command for a
CPU (`train.py config/train_shakespeare_char.py --device=cpu ...`, NANOGPT_ARGS) with the peer
python in --nanogpt_dir, its data/shakespeare_char/{train,val}.bin made first from --data_dir's
input.txt by its prepare.py if missing; (b) `train.py --config=configs/shakespeare_char.py` from
this repository in a fresh workdir, with each --ours_flag appended. Per run: wall seconds from
process start to exit; the final validation loss (nanoGPT: the last "step N: ... val loss B", an
estimate over eval_iters=20 random batches; ours: "nll" of the last "eval" record of
metrics.jsonl); the training step's tokens/s (nanoGPT: 12 * 64 / median "time X ms" after iter
100, evaluations included in the iterations that follow them; ours: median "tokens_per_sec" of
the "train" records after the first). Both sides share the machine: the load average is recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from transformer.cli import fail

_NANOGPT_DIR = flags.DEFINE_string("nanogpt_dir", None, "A nanoGPT checkout.")
_PEER_PYTHON = flags.DEFINE_string("peer_python", None, "A python with torch and numpy.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "A directory holding tinyshakespeare input.txt.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "", "Logs and workdirs ('' = a temp dir).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Runs of each, alternating.")
_OURS_FLAGS = flags.DEFINE_multi_string("ours_flag", [], "A flag appended to our train.py.")
_OUTPUT = flags.DEFINE_string("output", "", "Write the raw numbers here as JSON.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANOGPT_ARGS = ["train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
                "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                "--lr_decay_iters=2000", "--dropout=0.0"]
NANOGPT_TOKENS_PER_ITER = 12 * 64  # batch_size * block_size above
NANOGPT_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", re.M)
NANOGPT_ITER = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", re.M)


def prepare_nanogpt_data(nanogpt_dir: str, python: str, data_dir: str) -> None:
  """Makes data/shakespeare_char/{train,val}.bin with nanoGPT's prepare.py from our input.txt
  (prepare.py downloads input.txt only when it is missing)."""
  target = os.path.join(nanogpt_dir, "data", "shakespeare_char")
  if all(os.path.exists(os.path.join(target, f)) for f in ("train.bin", "val.bin", "meta.pkl")):
    return
  if not os.path.exists(os.path.join(target, "input.txt")):
    shutil.copyfile(os.path.join(data_dir, "input.txt"), os.path.join(target, "input.txt"))
  subprocess.run([python, "prepare.py"], cwd=target, check=True)


def timed_run(command: list[str], cwd: str, log_path: str) -> dict:
  """Runs `command` with its output in `log_path`; {"seconds", "load_before", "load_after"}."""
  load_before = os.getloadavg()[0]
  t0 = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    code = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode
  seconds = time.perf_counter() - t0
  if code != 0:
    fail(f"{' '.join(command)} (in {cwd}) exited with status {code}; its output is in {log_path}")
  return dict(seconds=seconds, load_before=load_before, load_after=os.getloadavg()[0])


def parse_nanogpt(log_text: str) -> dict:
  """The last evaluation's losses and the training step's tokens/s from nanoGPT's output."""
  evals = NANOGPT_EVAL.findall(log_text)
  iter_ms = [float(ms) for i, ms in NANOGPT_ITER.findall(log_text) if int(i) >= 100]
  if not evals or not iter_ms:
    raise ValueError("no 'step N: ... val loss' or 'iter N: ... time X ms' line after iter 100")
  step, train_loss, val_loss = evals[-1]
  median_ms = float(np.median(iter_ms))
  return dict(step=int(step), train_loss=float(train_loss), val_loss=float(val_loss),
              evals=len(evals), median_iter_ms=median_ms,
              tokens_per_sec=NANOGPT_TOKENS_PER_ITER / (median_ms / 1e3))


def parse_ours(metrics_path: str) -> dict:
  """The last "eval" record's nll and the median train tokens/s (after the first record)."""
  records = []
  with open(metrics_path, encoding="utf-8") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue  # a line cut short by a kill
  evals = [r for r in records if r.get("split") == "eval" and "nll" in r]
  rates = [r["tokens_per_sec"] for r in records if r.get("split") == "train"
           and "tokens_per_sec" in r][1:]
  if not evals:
    raise ValueError(f"no eval record with 'nll' in {metrics_path}")
  return dict(step=int(evals[-1]["step"]), val_loss=float(evals[-1]["nll"]), evals=len(evals),
              tokens_per_sec=float(np.median(rates)) if rates else float("nan"))


def run_nanogpt(python: str, nanogpt_dir: str, log_path: str) -> dict:
  result = timed_run([python, *NANOGPT_ARGS], nanogpt_dir, log_path)
  try:
    with open(log_path, encoding="utf-8") as f:
      return {**result, **parse_nanogpt(f.read())}
  except ValueError as e:
    fail(f"{log_path}: {e}")


def run_ours(workdir: str, data_dir: str, log_path: str) -> dict:
  command = [sys.executable, "train.py", "--config=configs/shakespeare_char.py",
             f"--config.data_dir={data_dir}", f"--workdir={workdir}", *_OURS_FLAGS.value]
  result = timed_run(command, REPO, log_path)
  try:
    return {**result, **parse_ours(os.path.join(workdir, "metrics.jsonl"))}
  except (OSError, ValueError) as e:
    fail(f"{e} (the run's output is in {log_path})")


def spread(values: list[float], fmt: str) -> str:
  """`median [min-max]` of the repeats."""
  return f"{np.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  for name, flag in (("--nanogpt_dir", _NANOGPT_DIR), ("--peer_python", _PEER_PYTHON),
                     ("--data_dir", _DATA_DIR)):
    if not flag.value:
      fail(f"{name} is required")
  # Absolute (the runs change directory), symlinks kept (a venv's python finds its venv by them).
  nanogpt_dir, data_dir, python = (os.path.abspath(f.value)
                                   for f in (_NANOGPT_DIR, _DATA_DIR, _PEER_PYTHON))
  if not os.path.exists(os.path.join(nanogpt_dir, "train.py")):
    fail(f"--nanogpt_dir={nanogpt_dir} holds no nanoGPT checkout (no train.py)")
  if not (os.path.isfile(python) and os.access(python, os.X_OK)):
    fail(f"--peer_python={python} is not an executable")
  if not os.path.exists(os.path.join(data_dir, "input.txt")):
    fail(f"--data_dir={data_dir} holds no input.txt")
  if _REPEATS.value < 1:
    fail("--repeats must be at least 1")
  root = os.path.abspath(_WORKDIR_ROOT.value or tempfile.mkdtemp(prefix="nanogpt_benchmark_"))
  os.makedirs(root, exist_ok=True)
  prepare_nanogpt_data(nanogpt_dir, python, data_dir)
  threads = int(subprocess.run(
      [python, "-c", "import torch; print(torch.get_num_threads())"],
      check=True, capture_output=True, text=True).stdout.strip())

  runs = {"nanogpt": [], "ours": []}
  for i in range(_REPEATS.value):
    workdir = os.path.join(root, f"ours_{i}")
    if os.path.exists(workdir):
      fail(f"{workdir} exists: give a fresh --workdir_root")
    runs["nanogpt"].append(run_nanogpt(python, nanogpt_dir, os.path.join(root, f"nanogpt_{i}.log")))
    runs["ours"].append(run_ours(workdir, data_dir, os.path.join(root, f"ours_{i}.log")))
    for side in ("nanogpt", "ours"):
      r = runs[side][-1]
      print(f"repeat {i} {side}: {r['seconds']:.1f} s, step {r['step']} val loss "
            f"{r['val_loss']:.4f}, {r['tokens_per_sec']:,.0f} train tokens/s, load "
            f"{r['load_before']:.2f} -> {r['load_after']:.2f}", flush=True)

  print(f"\n{_REPEATS.value} run(s) each, medians [min-max]; os.cpu_count() {os.cpu_count()}, "
        f"nanoGPT's torch threads {threads}; logs in {root}")
  print(f"{'':18s} {'nanoGPT':>26s} {'ours':>26s} {'ours/nanoGPT':>13s}")
  for key, label, fmt in (("seconds", "time to finish s", ".1f"), ("val_loss", "final val loss",
                          ".4f"), ("tokens_per_sec", "train tokens/s", ",.0f"),
                          ("load_before", "load avg before", ".2f")):
    n, o = ([r[key] for r in runs[side]] for side in ("nanogpt", "ours"))
    ratio = f"{np.median(o) / np.median(n):13.3f}" if key in ("seconds", "tokens_per_sec") else ""
    print(f"{label:18s} {spread(n, fmt):>26s} {spread(o, fmt):>26s} {ratio}")
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump(dict(cpu_count=os.cpu_count(), torch_threads=threads, nanogpt_args=NANOGPT_ARGS,
                     ours_flags=_OURS_FLAGS.value, root=root, runs=runs), f, indent=2)


if __name__ == "__main__":
  app.run(main)
