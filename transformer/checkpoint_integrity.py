"""Checksums of saved checkpoints, so that bytes changed on disk after a save are detected.

Orbax checks a checkpoint's structure and metadata when it reads it, not the bytes of the
arrays: flipped bytes in a data file restore without complaint (seen: NaN in Adam's moments).
So once a save has completed, the SHA-256 of every file of its step directory is recorded in
`WORKDIR/checkpoint_checksums/<step>.json`, and a restore first compares them. A checkpoint
without a record (written before records existed) is read as before.
"""

from __future__ import annotations

import hashlib
import json
import os

from transformer.files import write_atomically

CHECKSUMS_DIRNAME = "checkpoint_checksums"


def record_path(step_dir: str) -> str:
  """WORKDIR/checkpoint_checksums/<step>.json for WORKDIR/checkpoints/<step>."""
  step_dir = os.path.abspath(step_dir)
  workdir = os.path.dirname(os.path.dirname(step_dir))
  return os.path.join(workdir, CHECKSUMS_DIRNAME, os.path.basename(step_dir) + ".json")


def _digests(step_dir: str) -> dict[str, str]:
  digests = {}
  for folder, _, files in os.walk(step_dir):
    for name in sorted(files):
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        digests[os.path.relpath(path, step_dir)] = hashlib.file_digest(f, "sha256").hexdigest()
  return digests


def record(step_dir: str) -> None:
  """Writes the step directory's checksums (atomically: a reader sees all or nothing)."""
  path = record_path(step_dir)
  write_atomically(path, json.dumps(_digests(step_dir), indent=0, sort_keys=True))


def has_record(step_dir: str) -> bool:
  return os.path.exists(record_path(step_dir))


def verify(step_dir: str) -> str | None:
  """None when the files match their record (or there is none); else what differs."""
  path = record_path(step_dir)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    expected = json.load(f)
  actual = _digests(step_dir)
  for name, digest in sorted(expected.items()):
    if name not in actual:
      return f"{name} is missing"
    if actual[name] != digest:
      return f"{name} does not match the checksum recorded when it was saved"
  return None


def forget(step_dir: str) -> None:
  """Drops the record of a checkpoint that was deleted or set aside."""
  path = record_path(step_dir)
  if os.path.exists(path):
    os.remove(path)
