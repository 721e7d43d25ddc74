"""One workdir, one trainer: `WORKDIR/trainer.lock`, held while a run trains there.

Two trainers on one workdir would interleave their metrics and delete each other's checkpoints,
so the second refuses at once, naming the first one's host and pid. The lock is an advisory
`flock` on the file, which the kernel drops when its process dies however it dies, so a lock
left by a dead process is simply taken over (with a notice naming it). The file's text (host,
pid, start time) is what the refusal reports. With several hosts only process 0 takes it: one
lock per workdir. (flock is host-local on some network file systems; there a second trainer
on another host is not stopped by it.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from absl import logging

LOCK_FILENAME = "trainer.lock"


class WorkdirBusyError(RuntimeError):
  """Another live trainer holds the workdir."""


class WorkdirLock:
  """`with WorkdirLock(workdir):` or acquire()/release()."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILENAME)
    self._fd: int | None = None

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = _read_owner(fd)
      os.close(fd)
      raise WorkdirBusyError(
          f"The workdir {os.path.dirname(self.path)} is in use by another trainer "
          f"(host {owner.get('host', '?')}, pid {owner.get('pid', '?')}, started "
          f"{owner.get('started', '?')}). Stop that run first, or train in another --workdir."
      ) from None
    previous = _read_owner(fd)
    if previous:
      logging.warning("Taking over the workdir lock %s left by host %s, pid %s (started %s), "
                      "which is no longer running.", self.path, previous.get("host", "?"),
                      previous.get("pid", "?"), previous.get("started", "?"))
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    """Empties the file (so the next run sees no leftover owner) and drops the lock."""
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _read_owner(fd: int) -> dict:
  try:
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    return json.loads(text) if text else {}
  except (OSError, ValueError):
    return {}
