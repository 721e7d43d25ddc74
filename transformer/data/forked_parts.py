"""Python-bound work on a long list, one contiguous part per usable core, in forked children.

Tokenizing a large split (parallel_encoding.py) and writing out the number task's numbers
(number_task.py) are loops in Python, so they run on one core whatever the machine has.
`map_parts(fn, items)` cuts `items` into one contiguous part per usable core (parts of at least
`min_items_per_process` items), runs `fn` on the first part in this process and on the others
in children made with `fork`, and returns the results in order: what `fn` of each part would
give in one process. The children inherit `fn` and `items` instead of receiving copies, send
back only their results (pickled), and run only what `fn` runs: never JAX, whose warning about
forking a multithreaded process is therefore silenced for that call. Where the platform cannot
fork, the parts run in this process; a child that fails or dies has its part run here instead,
with a warning.
"""

from __future__ import annotations

import multiprocessing
import traceback
import warnings
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging

from transformer.cpu_devices import usable_cores


def map_parts(fn: Callable[[Sequence], Any], items: Sequence, *, min_items_per_process: int,
              processes: int | None = None) -> list:
  """[fn(part) for each contiguous part of `items`], one part per process: at most `processes`
  of them (default: the usable cores), each of at least `min_items_per_process` items."""
  processes = usable_cores() if processes is None else processes
  processes = max(1, min(processes, len(items) // max(1, min_items_per_process)))
  if processes == 1 or "fork" not in multiprocessing.get_all_start_methods():
    return [fn(items)]
  bounds = np.linspace(0, len(items), processes + 1).astype(int).tolist()
  context = multiprocessing.get_context("fork")
  children = []
  for begin, end in zip(bounds[1:-1], bounds[2:]):
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_run_part, args=(fn, items, begin, end, writer), daemon=True)
    with warnings.catch_warnings():  # JAX's warning on fork: the child never runs JAX
      warnings.filterwarnings("ignore", message=r".*fork", category=RuntimeWarning)
      warnings.filterwarnings("ignore", message=r".*fork", category=DeprecationWarning)
      child.start()
    writer.close()
    children.append((child, reader, begin, end))
  try:
    results = [fn(items[:bounds[1]])]
    for child, reader, begin, end in children:
      ok, result = _receive(child, reader)
      results.append(result if ok else fn(items[begin:end]))
  finally:  # an error here (or Ctrl-C) leaves no child behind
    for child, *_ in children:
      if child.is_alive():
        child.kill()
        child.join()
  return results


def _run_part(fn, items, begin: int, end: int, writer) -> None:
  """The child's work: its part's result, or the error's traceback, sent to the parent."""
  try:
    writer.send((True, fn(items[begin:end])))
  except Exception:  # pylint: disable=broad-except
    writer.send((False, traceback.format_exc()))
  finally:
    writer.close()


def _receive(child, reader) -> tuple[bool, Any]:
  try:
    ok, payload = reader.recv()
  except (EOFError, OSError):
    ok, payload = False, "the worker process ended without an answer"
  reader.close()
  child.join()
  if not ok:
    logging.warning("A worker process failed (%s); running its part here instead.",
                    payload.strip().splitlines()[-1])
  return ok, payload
