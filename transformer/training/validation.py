"""Checks a run config before anything compiles; every message names the offending key.

The known keys are those of `configs/default.py` (every config in `configs/` has the same keys)
and, under `model`, the fields of `TransformerConfig` that a config may set.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import ml_collections

from transformer.config import TransformerConfig
from transformer.data.pipeline import TOKEN_BUDGETS
from transformer.training.schedules import SCHEDULES
from transformer.training.sharding import PARALLELISMS

DEFAULT_CONFIG_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "configs", "default.py")
# TransformerConfig fields a run config does not set: the vocabulary comes from the tokenizer,
# max_len from `max_length`, and the two modes from the trainer and decoder.
MODEL_FIELDS_NOT_IN_CONFIG = ("vocab_size", "max_len", "deterministic", "decode")
BATCHINGS = ("padded", "tokens", "packed")


class ConfigError(ValueError):
  """A run config value that cannot work."""


def default_config() -> ml_collections.ConfigDict | None:
  """configs/default.py's config, the reference for key names (None when not found)."""
  if not os.path.exists(DEFAULT_CONFIG_PATH):
    return None
  spec = importlib.util.spec_from_file_location("_default_run_config", DEFAULT_CONFIG_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _unknown_keys(config, reference, prefix="") -> list[str]:
  unknown = []
  for key in config.keys():
    if key not in reference:
      unknown.append(prefix + key)
    elif isinstance(reference[key], ml_collections.ConfigDict) and key != "model":
      if isinstance(config[key], ml_collections.ConfigDict):
        unknown += _unknown_keys(config[key], reference[key], prefix + key + ".")
  return unknown


def model_config_from(config, vocab_size: int) -> TransformerConfig:
  """TransformerConfig(vocab_size=tokenizer's, max_len=config.max_length, **config.model)."""
  fields = {f.name for f in dataclasses.fields(TransformerConfig)} - set(MODEL_FIELDS_NOT_IN_CONFIG)
  model = dict(config.model)
  unknown = sorted(set(model) - fields)
  if unknown:
    raise ConfigError(
        f"Unknown key(s) {', '.join('model.' + k for k in unknown)}; allowed under model: "
        f"{', '.join(sorted(fields))}.")
  try:
    return TransformerConfig(vocab_size=vocab_size, max_len=config.max_length, **model)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"Invalid model config: {e} (set as config.model.*)") from e


def _positive_int(config, key, minimum=1):
  value = config[key]
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}.")


def validate_config(config, *, num_devices: int, process_count: int = 1,
                    vocab_size: int | None = None) -> None:
  """Raises ConfigError naming the key when `config` cannot train on `num_devices` devices."""
  reference = default_config()
  if reference is not None:
    unknown = _unknown_keys(config, reference)
    if unknown:
      raise ConfigError(
          f"Unknown config key(s): {', '.join(unknown)}. Known keys are those of "
          f"configs/default.py; check the spelling.")
    missing = [k for k in reference.keys() if k not in config]
    if missing:
      raise ConfigError(f"Missing config key(s): {', '.join(missing)} (see configs/default.py).")

  for key in ("num_train_steps", "batch_size", "eval_batch_size", "grad_accum_steps",
              "keep_checkpoints", "log_every_steps", "max_length", "vocab_size"):
    _positive_int(config, key)
  for key in ("eval_every_steps", "checkpoint_every_steps", "num_eval_batches", "warmup_steps",
              "tokens_per_batch", "seed"):
    _positive_int(config, key, minimum=0)
  minutes = config.get("checkpoint_every_minutes", 0.0)
  if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0:
    raise ConfigError(f"checkpoint_every_minutes={minutes!r} must be a number >= 0 (0 = off).")
  if config.get("token_budget", "padded") not in TOKEN_BUDGETS:
    raise ConfigError(f"token_budget={config.token_budget!r} is unknown; allowed: "
                      f"{', '.join(TOKEN_BUDGETS)}.")
  if not isinstance(config.get("compilation_cache_dir", ""), str):
    raise ConfigError(f"compilation_cache_dir={config.compilation_cache_dir!r} must be a path, "
                      "'auto' or '' (off).")
  if config.max_length < 2:
    raise ConfigError(f"max_length={config.max_length} must be at least 2 (a token and EOS).")
  # Checked now, not when the final evaluation reaches them after training.
  _positive_int(config, "beam_size")
  _positive_int(config, "max_decode_extra", minimum=0)
  _positive_int(config, "prefetch", minimum=0)
  if config.batching == "packed":
    _positive_int(config, "pack_window")
  if not config.length_penalty >= 0:
    raise ConfigError(f"length_penalty={config.length_penalty!r} must be >= 0 (0.6 in §6.1).")
  if config.schedule not in SCHEDULES:
    raise ConfigError(f"schedule={config.schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}.")
  if config.schedule == "paper" and config.warmup_steps < 1:
    raise ConfigError(f"warmup_steps={config.warmup_steps} must be >= 1 with schedule='paper'.")
  if config.parallelism not in PARALLELISMS:
    raise ConfigError(
        f"parallelism={config.parallelism!r} is unknown; allowed: {', '.join(PARALLELISMS)}.")
  if not config.learning_rate > 0:
    raise ConfigError(f"learning_rate={config.learning_rate!r} must be > 0.")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"label_smoothing={config.label_smoothing!r} must be in [0, 1).")
  if config.grad_clip_norm < 0:
    raise ConfigError(f"grad_clip_norm={config.grad_clip_norm!r} must be >= 0 (0 = no clipping).")
  if config.weight_decay < 0:
    raise ConfigError(f"weight_decay={config.weight_decay!r} must be >= 0.")
  for key in ("adam_b1", "adam_b2"):
    if not 0.0 <= config[key] < 1.0:
      raise ConfigError(f"{key}={config[key]!r} must be in [0, 1).")
  if not config.adam_eps > 0:
    raise ConfigError(f"adam_eps={config.adam_eps!r} must be > 0.")

  if config.batching not in BATCHINGS:
    raise ConfigError(f"batching={config.batching!r} is unknown; allowed: {', '.join(BATCHINGS)}.")
  if config.batching in ("padded", "packed"):
    if config.batch_size % num_devices:
      raise ConfigError(
          f"batch_size={config.batch_size} cannot be split over {num_devices} devices; use a "
          f"multiple of {num_devices} (for example {max(num_devices, config.batch_size // num_devices * num_devices)}).")
    if config.batch_size % process_count:
      raise ConfigError(
          f"batch_size={config.batch_size} cannot be split over {process_count} hosts.")
  elif config.tokens_per_batch < config.max_length:
    raise ConfigError(
        f"tokens_per_batch={config.tokens_per_batch} is smaller than max_length="
        f"{config.max_length}: the longest sequence would not fit in a batch.")
  if config.eval_batch_size % process_count:
    raise ConfigError(
        f"eval_batch_size={config.eval_batch_size} cannot be split over {process_count} hosts.")

  model_config_from(config, vocab_size or config.vocab_size)
