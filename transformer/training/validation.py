"""Checks a run config before anything compiles; every message names the offending key.

The known keys are those of the task's reference config (configs/default.py for translation,
configs/shakespeare_char.py for language modelling: every config of a task has the same keys)
and, under `model`, the fields of `TransformerConfig` that a config may set. The checks of keys
every task has are here; each task checks its own (transformer/tasks).
"""

from __future__ import annotations

import ml_collections

from transformer import cpu_devices
from transformer.config import ConfigError
from transformer.config_files import load_config_file
from transformer.tasks import get_task
from transformer.tasks.base import require_int
from transformer.training.schedules import SCHEDULES
from transformer.training.sharding import PARALLELISMS
from transformer.training.time_budget import MAX_OVERPLAN, MIN_CALIBRATION_STEP

__all__ = ["ConfigError", "default_config", "reference_config", "validate_config"]


def reference_config(config=None) -> ml_collections.ConfigDict | None:
  """The reference config of `config`'s task (None when the file is not found)."""
  name = get_task(config).reference_config if config is not None else "default"
  try:
    return load_config_file(name)
  except FileNotFoundError:
    return None


def default_config() -> ml_collections.ConfigDict | None:
  """configs/default.py's config (the translation task's reference)."""
  return reference_config(None)


def _unknown_keys(config, reference, prefix="") -> list[str]:
  unknown = []
  for key in config.keys():
    if key not in reference:
      unknown.append(prefix + key)
    elif isinstance(reference[key], ml_collections.ConfigDict) and key != "model":
      if isinstance(config[key], ml_collections.ConfigDict):
        unknown += _unknown_keys(config[key], reference[key], prefix + key + ".")
  return unknown


def _check_keys(config, task) -> None:
  reference = reference_config(config)
  if reference is None:
    return
  where = f"configs/{task.reference_config}.py"
  unknown = _unknown_keys(config, reference)
  if unknown:
    raise ConfigError(
        f"Unknown config key(s): {', '.join(unknown)}. Known keys of task={task.name!r} are "
        f"those of {where}; check the spelling.")
  missing = [k for k in reference.keys() if k not in config]
  if missing:
    raise ConfigError(f"Missing config key(s): {', '.join(missing)} (see {where}).")


def _check_batch_rows(config, num_devices: int, process_count: int) -> None:
  if config.batch_size % num_devices:
    example = max(num_devices, config.batch_size // num_devices * num_devices)
    raise ConfigError(
        f"batch_size={config.batch_size} cannot be split over {num_devices} devices; use a "
        f"multiple of {num_devices} (for example {example}).")
  if config.batch_size % process_count:
    raise ConfigError(
        f"batch_size={config.batch_size} cannot be split over {process_count} hosts.")


def trains_on(config, num_devices: int) -> bool:
  """Whether `config` validates on `num_devices` devices of one process (cpu_devices="auto")."""
  try:
    validate_config(config, num_devices=num_devices)
  except ValueError:  # ConfigError, or a model config the task rejects
    return False
  return True


def _is_number(value) -> bool:
  """An int or a float (a bool is neither here)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_minutes(config, key: str, off: str) -> float:
  """config[key] (0 when unset), a number of minutes >= 0; ConfigError naming the key if not."""
  minutes = config.get(key, 0.0)
  if not _is_number(minutes) or minutes < 0:
    raise ConfigError(f"{key}={minutes!r} must be a number >= 0 ({off}).")
  return minutes


def validate_config(config, *, num_devices: int, process_count: int = 1,
                    vocab_size: int | None = None) -> None:
  """Raises ConfigError naming the key when `config` cannot train on `num_devices` devices."""
  task = get_task(config)
  _check_keys(config, task)
  for key in ("num_train_steps", "batch_size", "eval_batch_size", "grad_accum_steps",
              "keep_checkpoints", "log_every_steps", "max_length"):
    require_int(config, key)
  for key in ("eval_every_steps", "checkpoint_every_steps", "num_eval_batches", "warmup_steps",
              "seed"):
    require_int(config, key, minimum=0)
  _require_minutes(config, "checkpoint_every_minutes", "0 = off")
  budget = _require_minutes(config, "train_minutes", "0 = off: train num_train_steps steps")
  if budget and config.schedule == "cosine" and config.warmup_steps < MIN_CALIBRATION_STEP:
    raise ConfigError(
        f"warmup_steps={config.warmup_steps} is too short for train_minutes={budget!r} with "
        f"schedule='cosine': the step count is fixed at the end of the warm-up from the steps "
        f"timed before it, so use warmup_steps >= {MIN_CALIBRATION_STEP}, or train_minutes=0 "
        "and num_train_steps.")
  overplan = config.get("budget_overplan", 0.0)
  if not _is_number(overplan) or not 0.0 <= overplan <= MAX_OVERPLAN:
    raise ConfigError(
        f"budget_overplan={overplan!r} must be a fraction in [0, {MAX_OVERPLAN}]: how far past "
        "what train_minutes holds the time budget plans its schedule (the deadline cuts the "
        "rest, so more would cut a cosine well above 0); 0 = the count ends the run.")
  if not isinstance(config.get("compilation_cache_dir", ""), str):
    raise ConfigError(f"compilation_cache_dir={config.compilation_cache_dir!r} must be a path, "
                      "'auto' or '' (off).")
  cpu_devices.parse(config.get("cpu_devices", "auto"))
  if config.max_length < 2:
    raise ConfigError(f"max_length={config.max_length} must be at least 2 (a token and EOS).")
  if config.schedule not in SCHEDULES:
    raise ConfigError(
        f"schedule={config.schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}.")
  if config.schedule == "paper" and config.warmup_steps < 1:
    raise ConfigError(f"warmup_steps={config.warmup_steps} must be >= 1 with schedule='paper'.")
  final = config.get("final_learning_rate_fraction", 0.0)
  if not 0.0 <= final <= 1.0:
    raise ConfigError(f"final_learning_rate_fraction={final!r} must be in [0, 1] (the cosine "
                      "schedule's end as a fraction of learning_rate).")
  if config.parallelism not in PARALLELISMS:
    raise ConfigError(
        f"parallelism={config.parallelism!r} is unknown; allowed: {', '.join(PARALLELISMS)}.")
  if not config.learning_rate > 0:
    raise ConfigError(f"learning_rate={config.learning_rate!r} must be > 0.")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"label_smoothing={config.label_smoothing!r} must be in [0, 1).")
  if config.grad_clip_norm < 0:
    raise ConfigError(
        f"grad_clip_norm={config.grad_clip_norm!r} must be >= 0 (0 = no clipping).")
  if config.weight_decay < 0:
    raise ConfigError(f"weight_decay={config.weight_decay!r} must be >= 0.")
  for key in ("adam_b1", "adam_b2"):
    if not 0.0 <= config[key] < 1.0:
      raise ConfigError(f"{key}={config[key]!r} must be in [0, 1).")
  if not config.adam_eps > 0:
    raise ConfigError(f"adam_eps={config.adam_eps!r} must be > 0.")

  task.validate(config, num_devices=num_devices, process_count=process_count)
  if task.rows_are_fixed(config):
    _check_batch_rows(config, num_devices, process_count)
  if config.eval_batch_size % process_count:
    raise ConfigError(
        f"eval_batch_size={config.eval_batch_size} cannot be split over {process_count} hosts.")
  task.model_config(config, vocab_size or config.get("vocab_size", 0) or 1)
