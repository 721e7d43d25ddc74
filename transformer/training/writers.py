"""Where metrics go: TensorBoard event files (tensorboardX, no TensorFlow) and `metrics.jsonl`.

Only process 0 writes. Each `write(step, metrics)` adds one JSON line
`{"step": 100, "split": "train", "loss": ..., ...}` to `WORKDIR/metrics.jsonl` and one scalar per
metric under `split/name` to the event files in `WORKDIR/tensorboard/`.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
from absl import logging
from tensorboardX import SummaryWriter


class MetricWriter:
  """`write(step, split, metrics)` to TensorBoard and metrics.jsonl; no-op on processes > 0."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    for name, value in clean.items():
      if math.isfinite(value):
        self._tb.add_scalar(f"{split}/{name}", value, step)
    record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    """Flushes and closes both files; a full disk is logged, not raised (closing runs while
    the error that stopped the run, often the same full disk, is on its way to the user)."""
    if self.enabled:
      self.enabled = False
      for name, stream in (("TensorBoard events", self._tb), ("metrics.jsonl", self._jsonl)):
        try:
          stream.close()
        except OSError as e:
          logging.warning("Could not write the last %s: %s", name, e)


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
  """The records of `WORKDIR/metrics.jsonl` (for notebooks and tests)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [r for r in records if split is None or r["split"] == split]
