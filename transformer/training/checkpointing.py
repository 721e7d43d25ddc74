"""Checkpoints with Orbax: asynchronous saves, the last K kept, automatic resume, preemption.

A checkpoint is one step directory `WORKDIR/checkpoints/<step>/` holding three items:
  - `state`: the train state (step, parameters, optimizer state), every leaf as sharded;
  - `data_iter`: the grain iterator's position (one file per host), so a resumed run reads
    exactly the batch an uninterrupted run would have read next;
  - `model`: the model's TransformerConfig as JSON, to refuse a resume with another shape.
Orbax writes into a temporary directory and renames it when complete, so a save cut short by a
kill never replaces the latest complete checkpoint. A step directory that is complete by name but
cannot be read (truncated files, a disk error) is moved to `WORKDIR/checkpoints_broken/` with a
warning and the previous checkpoint is used; nothing is deleted. So is one whose files no longer
match the SHA-256 checksums recorded once its save completed (transformer/checkpoint_integrity.py:
Orbax itself does not check the arrays' bytes).
"""

from __future__ import annotations

import dataclasses
import logging as pylogging
import os
import re
import shutil
import signal
import threading
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from transformer import checkpoint_integrity
from transformer.config import upgrade_record

# The TransformerConfig fields that decide which parameters exist and their shapes.
SHAPE_FIELDS = ("architecture", "vocab_size", "d_model", "d_ff", "num_heads", "num_encoder_layers",
                "num_decoder_layers", "share_embeddings", "max_length", "positional_encoding",
                "param_dtype", "norm_order", "attention_bias", "scan_layers")


class _HideOrbaxInfo(pylogging.Filter):
  """Drops Orbax's INFO lines (dozens per save) and its tracebacks of a failed background save,
  which Checkpointer reports itself as one CheckpointSaveError line; other warnings and errors
  still show."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if "orbax" not in record.pathname:
      return True
    if record.levelno <= pylogging.INFO:
      return False
    message = record.getMessage()
    return not any(part in message for part in _SAVE_FAILURE_LOGS)


# Orbax's log lines when a background save fails (each with a traceback).
_SAVE_FAILURE_LOGS = ("_SignalingThread.run() raised an exception",
                      "Commit operations or the Commit callback in background save thread",
                      "Save Finalize thread", "[wait_until_finished]")


def quiet_orbax_logs() -> None:
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _HideOrbaxInfo) for f in logger.filters):
    logger.addFilter(_HideOrbaxInfo())


# Run settings that decide the structure of the saved optimizer and accumulation state. A
# checkpoint records them (its `run` item) so that a resume with other values converts the state
# (steps.convert_state) instead of failing to read it.
STATE_SETTINGS = ("grad_accum_steps", "grad_clip_norm", "weight_decay")


class ModelMismatchError(ValueError):
  """The checkpoint in the workdir was trained with a model of another shape."""


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (a full disk, a lost mount): the run stops at once."""


class ChecksumMismatchError(ValueError):
  """A checkpoint's files differ from the checksums recorded when it was saved."""


class StateMismatchError(ValueError):
  """The checkpoint reads, but its state is laid out for other settings than this config's."""


def run_settings(config) -> dict:
  return {key: config[key] for key in STATE_SETTINGS}


def _is_structure_mismatch(error: Exception) -> bool:
  text = str(error)
  return isinstance(error, ValueError) and ("Structure mismatch" in text or
                                            "tree structures do not match" in text.lower())


def model_config_json(model_config) -> dict:
  return {k: v for k, v in dataclasses.asdict(model_config).items()
          if k not in ("deterministic", "decode")}


def check_same_shape(saved: dict, model_config, directory: str, step: int) -> None:
  current = model_config_json(model_config)
  saved = upgrade_record(saved)
  diffs = [f"{name}: checkpoint {saved.get(name)!r}, this config {current.get(name)!r}"
           for name in SHAPE_FIELDS
           if name in saved and saved.get(name) != current.get(name)
           and not (name == "max_length" and current.get("positional_encoding") == "sinusoidal")]
  if diffs:
    raise ModelMismatchError(
        f"Cannot resume from the checkpoint of step {step} in {directory}: it holds a model of "
        f"another shape ({'; '.join(diffs)}). Use a new --workdir, or the config it was "
        "trained with.")


class Checkpointer:
  """Saves and restores (state, data iterator, model config) under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               quiet: bool = True):
    if quiet:
      quiet_orbax_logs()
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._last_save_step: int | None = None
    self._cleanup_partial_saves()  # left by a save that a crash or a full disk cut short
    self.broken_directory = os.path.abspath(os.path.join(workdir, "checkpoints_broken"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iter=None, model_config=None, *, force=True,
           settings: dict | None = None) -> bool:
    """Starts an asynchronous save of `state` (and the iterator position) as `step`."""
    items: dict[str, Any] = {"state": ocp.args.StandardSave(state)}
    if settings is not None:
      items["run"] = ocp.args.JsonSave(settings)
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    if model_config is not None:
      items["model"] = ocp.args.JsonSave(model_config_json(model_config))
    self.check_for_errors()  # the previous save, still in the background until now
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-except
      # Orbax waits here for the previous save, so the failure may be that one's.
      raise self._save_error(e, step) from None
    self._last_save_step = step
    self._record_checksums_or_stop()  # of the saves completed by now (the previous ones)
    return saved

  def _record_checksums_or_stop(self) -> None:
    """`_record_checksums`, or, when the disk refuses a record, one-line CheckpointSaveError
    naming what failed and what is intact (the save in flight is waited for first: it meets the
    same disk, and if it fails the error names it)."""
    try:
      self._record_checksums()
    except OSError as e:
      try:
        self.manager.wait_until_finished()
      except Exception as in_flight:  # pylint: disable=broad-except
        raise self._save_error(in_flight, self._last_save_step) from None
      raise self._save_error(e, None, action="Writing the checkpoints' checksums") from None

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _record_checksums(self) -> None:
    """Checksums of every completed checkpoint that has none; records of deleted ones dropped."""
    if jax.process_index() != 0:
      return
    steps = self.all_steps()
    in_flight = self._last_save_step if self.manager.is_saving_in_progress() else None
    for step in steps:
      if step != in_flight and not checkpoint_integrity.has_record(self._step_dir(step)):
        checkpoint_integrity.record(self._step_dir(step))
    records = os.path.dirname(checkpoint_integrity.record_path(self._step_dir(0)))
    if os.path.isdir(records):
      for name in os.listdir(records):
        stem = name.split(".")[0]
        if stem.isdigit() and int(stem) not in steps:
          os.remove(os.path.join(records, name))

  def check_for_errors(self) -> None:
    """Raises CheckpointSaveError when a background save has failed (cheap: no waiting)."""
    try:
      self.manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(e, self._last_save_step) from None

  def _save_error(self, error: Exception, step: int | None,
                  action: str | None = None) -> CheckpointSaveError:
    """One line: which step (or `action`), where, the OS error, the free space, what is
    intact."""
    cause, seen = error, set()
    while cause is not None and not isinstance(cause, OSError) and id(cause) not in seen:
      seen.add(id(cause))
      cause = cause.__cause__ or cause.__context__
    text = str(error)
    failed = re.search(r"/(\d+)\.orbax-checkpoint-tmp", text)  # the save that failed
    step = int(failed.group(1)) if failed else step
    action = action or f"Saving the checkpoint of step {step}"
    code = re.search(r"os_error_code='(\d+)'", text)
    if isinstance(cause, OSError) and cause.errno:
      reason = f"{cause.strerror} (errno {cause.errno})"
    elif code:  # tensorstore's errors carry the OS error as text
      reason = f"{os.strerror(int(code.group(1)))} (errno {code.group(1)})"
    else:
      reason = f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"
    try:
      free = f"{shutil.disk_usage(self.directory).free / 2**20:,.1f} MiB free there"
    except OSError:
      free = "free space unknown"
    self._cleanup_partial_saves()
    intact = [s for s in self.all_steps() if s != step]
    kept = "steps " + ", ".join(map(str, intact)) if intact else "none were written"
    return CheckpointSaveError(
        f"{action} to {self.directory} failed: {reason}; {free}. "
        f"Earlier checkpoints are intact ({kept}); "
        "make room (or move the workdir) and run the same command to resume.")

  def _cleanup_partial_saves(self) -> None:
    """Removes Orbax's temporary directories of saves that never completed (process 0)."""
    if jax.process_index() != 0 or not os.path.isdir(self.directory):
      return
    for name in os.listdir(self.directory):
      if ".orbax-checkpoint-tmp" in name:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def restore_latest(self, abstract_state, data_iter=None, model_config=None, *,
                     settings: dict | None = None, adapt=None):
    """Restores the newest readable checkpoint; returns (state, step) or (None, None).

    `abstract_state` gives shapes, dtypes and shardings (jax.ShapeDtypeStruct leaves).
    Unreadable checkpoints are moved aside (logged) and the previous one is tried.
    Raises ModelMismatchError when the model shape differs from `model_config`.

    When the checkpoint's recorded run `settings` (STATE_SETTINGS) differ from this run's,
    `adapt(saved_settings)` returns (abstract state as saved, convert(state) -> this run's
    state): the checkpoint is read as saved, converted and the change logged. A checkpoint
    without recorded settings whose state does not fit raises StateMismatchError; neither case
    sets the checkpoint aside.
    """
    for step in reversed(self.all_steps()):
      try:
        if model_config is not None:
          saved = self._restore_json(step, "model")
          if saved is not None:
            check_same_shape(saved, model_config, self.directory, step)
        problem = checkpoint_integrity.verify(self._step_dir(step))
        if problem:
          raise ChecksumMismatchError(problem)
        target, convert = abstract_state, None
        saved_settings = self._restore_json(step, "run") if settings is not None else None
        changed = [k for k in STATE_SETTINGS if saved_settings is not None and
                   k in saved_settings and saved_settings[k] != settings.get(k)]
        if changed and adapt is not None:
          target, convert = adapt({k: saved_settings[k] for k in STATE_SETTINGS
                                   if k in saved_settings})
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(target)}
        if data_iter is not None:
          items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        state = restored["state"]
        if convert is not None:
          state = convert(state)
          logging.warning(
              "Resuming the checkpoint of step %d with changed settings (%s): its optimizer and "
              "accumulation state were converted to this config's; parameters, Adam moments and "
              "step counts are kept.", step, "; ".join(
                  f"{k}: checkpoint {saved_settings[k]!r}, this config {settings[k]!r}"
                  for k in changed))
        return state, step
      except ModelMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        if _is_structure_mismatch(e):
          raise StateMismatchError(
              f"Cannot resume from the checkpoint of step {step} in {self.directory}: it reads, "
              f"but its optimizer or accumulation state is laid out for other settings than "
              f"this config's (it predates recorded settings; one of "
              f"{', '.join(STATE_SETTINGS)} changed). Resume with the settings it was trained "
              f"with, or use a new --workdir. Nothing was moved or deleted.") from e
        self._set_aside(step, e)
    return None, None

  def _restore_json(self, step: int, item: str) -> dict | None:
    path = os.path.join(self.directory, str(step), item)
    if not os.path.exists(path):
      return None
    return self.manager.restore(step, args=ocp.args.Composite(
        **{item: ocp.args.JsonRestore()}))[item]

  def _set_aside(self, step: int, error: Exception) -> None:
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.broken_directory, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    logging.warning(
        "Checkpoint of step %d in %s cannot be read (%s: %s); moving it to %s and trying the "
        "previous checkpoint.", step, source, type(error).__name__,
        str(error).splitlines()[0][:300] if str(error) else "", target)
    if jax.process_index() == 0 and os.path.exists(source):
      os.makedirs(self.broken_directory, exist_ok=True)
      shutil.move(source, target)
      checkpoint_integrity.forget(source)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"set_aside_{step}")
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until every started save is complete on disk (CheckpointSaveError if one failed)."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(e, self._last_save_step) from None
    self._record_checksums_or_stop()

  def close(self) -> None:
    """`wait`, then closes the manager. Orbax's close waits for the saves again and re-raises a
    save's failure: while `wait`'s one-line error is on its way that second report is logged, not
    raised over it; on its own it becomes the one-line CheckpointSaveError too."""
    try:
      self.wait()
    except BaseException:
      try:
        self.manager.close()
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Closing the checkpoint manager after a failed save: %s", e)
      raise
    try:
      self.manager.close()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(e, self._last_save_step) from None


class PreemptionWatcher:
  """Turns SIGTERM (a preempted TPU VM, `kill`) into a flag the training loop polls.

  The loop saves a checkpoint of the step it is at and returns; a second SIGTERM while saving
  is ignored, so the save completes. The previous handler is restored by `close`.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if not self._event.is_set():
      logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self._event.set()

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
