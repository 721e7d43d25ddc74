"""JAX's persistent compilation cache for the commands, so a restart or resume reuses the
programs compiled before instead of compiling them again (the same shapes give the same
programs; every token-budget bucket is one).

`config.compilation_cache_dir`: "auto" (the default) is $XDG_CACHE_HOME/transformer/jax or
~/.cache/transformer/jax, any other string a directory, "" no cache. Programs that compile in
under a second are cached too (XLA's default threshold skips them).
"""

from __future__ import annotations

import os

import jax


def default_directory() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "transformer", "jax")


def enable(setting: str | None = "auto") -> str | None:
  """Points JAX's persistent compilation cache at `setting`; returns the directory (or None).

  Call before the first compilation: JAX reads the setting once.
  """
  if not setting:
    return None
  directory = default_directory() if setting == "auto" else os.path.expanduser(setting)
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
