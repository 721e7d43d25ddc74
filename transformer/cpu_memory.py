"""Keep the memory that XLA's CPU programs free in the process, for their next run.

XLA's CPU runtime gives every run of a compiled program one temporary buffer for all of its
intermediates, taken from malloc when the run starts and freed when it ends: 368 MB for the
default model's training step, several GB for the base model's. glibc serves a request that
large from a fresh mmap and gives it back with munmap on free (always so for the threads XLA
runs programs on: a thread's own malloc arena cannot grow past 64 MB), so every step faults in
and zeroes about 90,000 new pages. On the 2-core CPU of docs/performance.md that was 15-20% of
the small models' step time (6% of the base model's).

`keep_freed_memory()` sets glibc's malloc, through its `mallopt`, so that freed memory stays
with the process: one arena for all threads, no mmap for large requests (they come from the
heap), and no trimming of the heap's free top. The price is resident memory: the process keeps
its high-water mark (the small training step's peak RSS went from 1.4 to 1.7-2.3 GiB there,
the base model's from 2.7 to 3.8-6.2 GiB).
It must run before JAX starts its thread pools (`cpu_devices.configure` calls it): a thread
keeps the arena it was first given. It does nothing where the C library is not glibc, where
JAX will run on an accelerator (programs' buffers live on the device there), or with
`TRANSFORMER_KEEP_FREED_MEMORY=0` in the environment.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform

import jax

OPT_OUT_VARIABLE = "TRANSFORMER_KEEP_FREED_MEMORY"
# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))

_applied: bool | None = None


def accelerator_expected() -> bool:
  """Whether JAX's default backend will be an accelerator: JAX_PLATFORMS (or jax_platforms)
  names one first, or, with neither set, a GPU or TPU plugin is installed."""
  platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
  if platforms:
    return platforms.split(",")[0].strip() != "cpu"
  return (bool(importlib.metadata.entry_points(group="jax_plugins"))
          or importlib.util.find_spec("libtpu") is not None)


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to keep freed memory (module docstring); True where it did. Once per
  process: later calls return the first call's answer."""
  global _applied
  if _applied is None:
    _applied = _apply()
  return _applied


def _apply() -> bool:
  if (os.environ.get(OPT_OUT_VARIABLE, "1") == "0" or platform.system() != "Linux"
      or platform.libc_ver()[0] != "glibc" or accelerator_expected()):
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all(mallopt(param, value) == 1 for param, value in _SETTINGS)
