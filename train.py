"""Trains the Transformer: `python train.py --config=configs/wmt14_ende_base.py --workdir=DIR`.

With no flags it trains the tiny default (configs/default.py) on the built-in task. Override any
config key with `--config.KEY=VALUE` (for example `--config.num_train_steps=500`). Running the
same command again resumes from the latest checkpoint in the workdir.

Several hosts: run the same command on every host with `--distributed` (TPU VMs and clusters
that jax.distributed detects by itself), or give `--coordinator_address`, `--num_processes` and
`--process_id` explicitly.
"""

import os
import re
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from transformer import compilation_cache, cpu_devices
from transformer.cli import fail
from transformer.config_files import load_config_file
from transformer.training.checkpointing import (
  CheckpointSaveError,
  ModelMismatchError,
  StateMismatchError,
)
from transformer.training.trainer import train_and_evaluate
from transformer.training.validation import default_config, trains_on
from transformer.training.workdir_lock import WorkdirBusyError
from transformer.workdir import WorkdirError

# Errors that are the user's to fix (a config value, the data, the workdir, a full disk): one
# line, exit 2. (ConfigError and DataError are ValueErrors.) --debug or TRANSFORMER_DEBUG=1 shows
# the traceback.
USER_ERRORS = (ValueError, WorkdirError, ModelMismatchError, StateMismatchError,
               WorkdirBusyError, CheckpointSaveError)


def _config_named_in(argv: list[str]):
  """The config file --config names (its known keys are the ones to list), or None."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      name, _, argument = arg[len("--config="):].partition(":")
      try:
        return load_config_file(name, argument or None)
      except Exception:  # pylint: disable=broad-except  (only used to list key names)
        return None
  return None


def _unknown_key(error: Exception, argv: list[str]) -> None:
  """ml_collections' AttributeError for `--config.KEY=VALUE` with a KEY the config lacks."""
  text = error.args[0] if error.args else str(error)
  name = re.search(r"[A-Za-z_]\w*", str(text)).group(0)  # the message quotes the key first
  hint = re.search(r'Did you mean "([^"]+)"', str(text))
  override = next((a for a in argv[1:] if a.startswith("--config.") and
                   name in a.split("=")[0].split(".")), f"--config.{name}")
  path = override.split("=")[0][len("--config."):].split(".")
  reference = _config_named_in(argv) or default_config()
  section = reference.get(path[0]) if len(path) > 1 and reference is not None else reference
  known = sorted(section.keys()) if hasattr(section, "keys") else []
  suggestion = f"; did you mean {hint.group(1)!r}?" if hint else ""
  fail(f"{override}: the config has no key {'.'.join(path)!r}{suggestion}; known keys"
       f"{' under ' + path[0] if len(path) > 1 else ''}: {', '.join(known)}.")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad `--config.KEY=VALUE` reported as one `Error:` line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    _unknown_key(e, argv)
  except flags.Error as e:
    fail(str(e))
  return []


try:  # config_flags applies the --config.* overrides already here, reading sys.argv
  _CONFIG = config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
      "Run config file (configs/*.py).", lock_config=True)
except (AttributeError, KeyError) as _error:
  _unknown_key(_error, sys.argv)

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and results (default: "
    "runs/<config name>-<time>, printed at the start).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of configuration and data errors.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  config = _CONFIG.value
  distributed = _DISTRIBUTED.value or bool(_COORDINATOR.value)
  try:  # before any JAX operation: the CPU backend reads it once
    cpu_devices.configure(config.get("cpu_devices", "auto"), lambda n: trains_on(config, n),
                          multi_process=distributed, d_model=config.model.d_model)
  except USER_ERRORS as e:
    fail(str(e))
  if distributed:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  workdir = _WORKDIR.value
  if workdir is None:
    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    name = os.path.splitext(os.path.basename(config_file))[0]
    workdir = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  cache = compilation_cache.enable(config.get("compilation_cache_dir", "auto"))
  if jax.process_index() == 0:
    print(f"Workdir: {os.path.abspath(workdir)}", flush=True)
    print(f"Compilation cache: {cache or 'off'}", flush=True)
  try:
    train_and_evaluate(config, workdir)
  except USER_ERRORS as e:
    if _DEBUG.value or os.environ.get("TRANSFORMER_DEBUG"):
      raise
    fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
