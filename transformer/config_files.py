"""Reading run configs from configs/*.py: one loader for the trainer, the tasks, the recipes that
build on another recipe, the benchmarks, the notebooks and the tests.

A run config file defines `get_config()` returning an ml_collections ConfigDict (optionally
taking one string argument, as `--config=configs/wmt14_ende_big.py:4` passes it).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs")


def config_path(name: str) -> str:
  """configs/<name>.py of this checkout (`name` with or without ".py"), or a path as given."""
  if os.sep in name or name.endswith(".py") and os.path.exists(name):
    return name
  return os.path.join(CONFIGS_DIR, name if name.endswith(".py") else name + ".py")


def load_config_file(name_or_path: str, argument: str | None = None) -> ml_collections.ConfigDict:
  """`get_config()` (or `get_config(argument)`) of a config file: a name in configs/ or a path.

  Raises FileNotFoundError naming the path when there is no such file.
  """
  path = config_path(name_or_path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No config file {path}.")
  module_name = "_run_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if argument is None else module.get_config(argument)
