"""Reading run configs from configs/*.py: one loader for the trainer, the tasks, the recipes that
build on another recipe, the benchmarks, the notebooks and the tests; and reading back the
resolved config a run wrote to its workdir (WORKDIR/config.json), for the trainer's next run and
the commands.

A run config file defines `get_config()` returning an ml_collections ConfigDict (optionally
taking one string argument, as `--config=configs/wmt14_ende_big.py:4` passes it).
"""

from __future__ import annotations

import importlib.util
import json
import os

import ml_collections

RUN_RECORD = "config.json"  # in a workdir: {"config": ..., "model": ..., "devices": ..., ...}
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


def read_run_record(workdir: str) -> dict | None:
  """WORKDIR/config.json as the trainer wrote it, or None when there is none.

  Raises ValueError naming the file when it is not a JSON object (cut short by a kill during the
  write, or edited by hand).
  """
  path = os.path.join(workdir, RUN_RECORD)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON ({e}).") from None
  if not isinstance(record, dict):
    raise ValueError(f"{path} holds a {type(record).__name__}, not the trainer's record.")
  return record
