"""Reading what the trainer leaves in a workdir: tokenizer, run config, checkpoints, parameters.

The trainer's layout (transformer/training/checkpointing.py): the
tokenizer `WORKDIR/tokenizer.model`, the run config `WORKDIR/config.json`, and Orbax checkpoints
`WORKDIR/checkpoints/<step>/{state,model,data_iter}`; only `state.params` is read. The averaged
checkpoint written by `python -m transformer.average` is `WORKDIR/averaged/{params,model,
averaging}`. `checkpoint` selects one of them:

  latest    the newest step in WORKDIR/checkpoints.
  best      the kept step with the best validation score in WORKDIR/metrics.jsonl (split "eval"):
            the highest "bleu" if the trainer recorded one, else the lowest "nll".
  averaged  WORKDIR/averaged.
  <step>    that step; or a path to a step directory or an averaged checkpoint directory.

Everything missing is a `WorkdirError` that names the file and the command that makes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from transformer import checkpoint_integrity, models
from transformer.cli import line_list
from transformer.config import TransformerConfig, upgrade_record
from transformer.config_files import read_run_record
from transformer.data.tokenizer import (
  CHARACTERS_FILENAME,
  TOKENIZER_FILENAME,
  load_workdir_tokenizer,
)
from transformer.training.checkpointing import quiet_orbax_logs
from transformer.translator import Translator

CHECKPOINT_CHOICES = ("latest", "best", "averaged")
AVERAGED_DIRNAME = "averaged"
VALIDATION_SPLIT = "eval"  # the split name the trainer writes validation metrics under


class WorkdirError(FileNotFoundError):
  """Something a command needs is not in the workdir; the message says what and how to make it."""


@dataclasses.dataclass
class CheckpointInfo:
  """Which parameters were loaded: kind ("step" or "averaged"), the directory, the (last) step,
  the averaged steps, and why it was chosen."""
  kind: str
  path: str
  step: int
  averaged_steps: list[int] = dataclasses.field(default_factory=list)
  reason: str = ""

  def describe(self) -> str:
    if self.kind == "averaged":
      return (f"average of steps {', '.join(map(str, self.averaged_steps))} ({self.path})")
    return f"step {self.step} ({self.path}){'; ' + self.reason if self.reason else ''}"


def _train_hint(workdir: str) -> str:
  return f"`python train.py --config=CONFIG --workdir={workdir}`"


def quiet_orbax() -> None:
  """Orbax logs several INFO lines per restore; keep its warnings."""
  quiet_orbax_logs()


def load_tokenizer(workdir: str):
  """WORKDIR/tokenizer.model (SentencePiece) or WORKDIR/characters.json (a character
  vocabulary); never trains one: a new vocabulary would not fit the model."""
  tokenizer = load_workdir_tokenizer(workdir)
  if tokenizer is None:
    raise WorkdirError(
        f"No tokenizer in {os.path.abspath(workdir)}: {TOKENIZER_FILENAME} (or "
        f"{CHARACTERS_FILENAME}) is missing. The trainer writes it before the first step; train "
        f"a model with {_train_hint(workdir)}, or pass --workdir of a trained run.")
  return tokenizer


def load_run_config(workdir: str):
  """The run config the trainer resolved (WORKDIR/config.json "config") as a ConfigDict, or None."""
  record = _read_config_json(workdir)
  if record is None or "config" not in record:
    return None
  return ml_collections.ConfigDict(record["config"])


def _read_config_json(workdir: str) -> dict | None:
  try:
    return read_run_record(workdir)
  except ValueError as e:
    raise WorkdirError(f"{e} Delete it and pass --config=configs/X.py (the config the run was "
                       "trained with), or resume the run, which writes it anew.") from None


def model_config_from_json(record: dict) -> TransformerConfig:
  """The TransformerConfig of a saved record (older field names and missing fields upgraded)."""
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  return TransformerConfig(**{k: v for k, v in upgrade_record(record).items() if k in fields})


def checkpoint_steps(workdir: str) -> list[int]:
  """Complete checkpoint steps in WORKDIR/checkpoints, oldest first ([] if none)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  quiet_orbax()
  manager = ocp.CheckpointManager(os.path.abspath(directory))
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def no_checkpoint_error(workdir: str) -> WorkdirError:
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  state = "does not exist" if not os.path.isdir(directory) else "holds no complete checkpoint"
  return WorkdirError(
      f"No checkpoint in {os.path.abspath(workdir)}: {directory} {state}. Train a model with "
      f"{_train_hint(workdir)}; it saves a checkpoint every config.checkpoint_every_steps steps "
      "and at the end.")


def validation_scores(workdir: str) -> dict[str, dict[int, float]]:
  """{metric: {step: value}} of the trainer's validation records in WORKDIR/metrics.jsonl
  (split "eval"), for "bleu" (higher is better) and "nll" (lower is better)."""
  path = os.path.join(workdir, "metrics.jsonl")
  scores: dict[str, dict[int, float]] = {"bleu": {}, "nll": {}}
  if not os.path.exists(path):
    return scores
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by a kill
      if record.get("split") != VALIDATION_SPLIT:
        continue
      for metric, values in scores.items():  # a resumed run may repeat a step: the last wins
        value = record.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
          values[int(record["step"])] = float(value)
  return scores


def results_name(split: str, checkpoint: str | int = "latest") -> str:
  """The name (no extension) evaluate writes `split`'s scores and translations under:
  `eval_<split>` for the latest checkpoint, as the trainer's final evaluation writes it, and
  `eval_<split>.<checkpoint>` for any other (`averaged`, `best`, `step3000`, or a checkpoint
  directory's name), so that scoring one checkpoint never replaces another's results."""
  text = str(checkpoint)
  if text == "latest":
    return f"eval_{split}"
  if text.lstrip("-").isdigit():
    label = f"step{int(text)}"
  elif text in CHECKPOINT_CHOICES:
    label = text
  else:  # a directory: a step's number, or an averaged checkpoint's folder name
    name = os.path.basename(os.path.normpath(text))
    label = f"step{name}" if name.isdigit() else re.sub(r"[^A-Za-z0-9_.-]", "_", name)
  return f"eval_{split}.{label}"


def find_checkpoint(workdir: str, checkpoint: str | int = "latest") -> CheckpointInfo:
  """Resolves `checkpoint` (latest | best | averaged | a step | a directory) in `workdir`."""
  workdir = os.path.abspath(workdir)
  text = str(checkpoint)
  if text == "averaged":
    path = os.path.join(workdir, AVERAGED_DIRNAME)
    if not os.path.isdir(os.path.join(path, "params")):
      raise WorkdirError(
          f"No averaged checkpoint in {workdir}: {path} is missing. Make one with "
          f"`python -m transformer.average --workdir={workdir} --last=5` (the paper averages "
          "the last 5 checkpoints for base models, 20 for big ones).")
    info = _read_averaging(path)
    return CheckpointInfo("averaged", path, int(info.get("step", 0)),
                          list(info.get("steps", [])), "averaged")
  if os.path.isdir(text):
    path = os.path.abspath(text)
    if os.path.isdir(os.path.join(path, "params")):
      info = _read_averaging(path)
      return CheckpointInfo("averaged", path, int(info.get("step", 0)),
                            list(info.get("steps", [])), "averaged")
    if os.path.isdir(os.path.join(path, "state")):
      name = os.path.basename(path.rstrip("/"))
      return CheckpointInfo("step", path, int(name) if name.isdigit() else -1, reason="given path")
    raise WorkdirError(f"--checkpoint={text} is a directory but neither a trainer step directory "
                       "(with state/) nor an averaged checkpoint (with params/).")
  steps = checkpoint_steps(workdir)
  if not steps:
    raise no_checkpoint_error(workdir)
  directory = os.path.join(workdir, "checkpoints")
  if text == "latest":
    return CheckpointInfo("step", os.path.join(directory, str(steps[-1])), steps[-1],
                          reason="latest")
  if text == "best":
    scores = validation_scores(workdir)
    for metric, better in (("bleu", max), ("nll", min)):  # BLEU when recorded, else the loss
      scored = {s: scores[metric][s] for s in steps if s in scores[metric]}
      if scored:
        pick = better(scored, key=lambda s: (scored[s], s if better is max else -s))  # ties: later
        return CheckpointInfo("step", os.path.join(directory, str(pick)), pick,
                              reason=f"best validation {metric} {scored[pick]:.4g} of kept steps "
                                     f"{line_list(sorted(scored))}")
    recorded = sorted(set(scores["bleu"]) | set(scores["nll"]))
    what = (f"validation is recorded for steps {line_list(recorded)}" if recorded else
            "no validation metric is recorded in metrics.jsonl")
    raise WorkdirError(
        f"Cannot pick the best checkpoint in {workdir}: the kept checkpoints are steps "
        f"{line_list(steps)}, and {what}. The trainer records validation at "
        "config.eval_every_steps; make it a multiple of config.checkpoint_every_steps (and "
        "keep more checkpoints with config.keep_checkpoints), or use --checkpoint=latest or "
        "averaged.")
  if text.lstrip("-").isdigit():
    step = int(text)
    if step not in steps:
      raise WorkdirError(f"No checkpoint of step {step} in {directory}; kept steps: "
                         f"{line_list(steps)}.")
    return CheckpointInfo("step", os.path.join(directory, str(step)), step, reason="given step")
  raise ValueError(f"checkpoint={text!r} is unknown; allowed: {', '.join(CHECKPOINT_CHOICES)}, "
                   "a step number, or a checkpoint directory.")


def _read_averaging(path: str) -> dict:
  if not os.path.isdir(os.path.join(path, "averaging")):
    return {}
  quiet_orbax()
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  return checkpointer.restore(path, args=ocp.args.Composite(
      averaging=ocp.args.JsonRestore()))["averaging"]


def load_model_config(workdir: str, info: CheckpointInfo | None = None) -> TransformerConfig:
  """The TransformerConfig of a checkpoint: its `model` item, else WORKDIR/config.json."""
  if info is not None and os.path.isdir(os.path.join(info.path, "model")):
    quiet_orbax()
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    record = checkpointer.restore(info.path, args=ocp.args.Composite(
        model=ocp.args.JsonRestore()))["model"]
    return model_config_from_json(record)
  record = _read_config_json(workdir)
  if record is None or "model" not in record:
    raise WorkdirError(
        f"Cannot tell the model's shape: {os.path.join(os.path.abspath(workdir), 'config.json')} "
        f"is missing and the checkpoint has no model item. Train with {_train_hint(workdir)}.")
  return model_config_from_json(record["model"])


def restore_params(info: CheckpointInfo, config: TransformerConfig, sharding=None) -> Any:
  """Reads only the parameters of a checkpoint (a trainer step's `state.params`, or an averaged
  checkpoint's `params`) onto one device (or `sharding`)."""
  quiet_orbax()
  target = models.abstract_params(config, sharding)
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  if info.kind == "averaged":
    return checkpointer.restore(info.path, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target)))["params"]
  item = {"params": target}
  restored = checkpointer.restore(info.path, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True)))
  return restored["state"]["params"]


def load_params(workdir: str, checkpoint: str | int = "latest"
                ) -> tuple[Any, TransformerConfig, CheckpointInfo]:
  """(params, model config, which checkpoint) from a workdir.

  With "latest", a newest checkpoint that cannot be read (cut short, corrupted) is passed over
  for the newest readable one, with a warning naming both, as the trainer does on resume; the
  files are left where they are (moving them aside is the trainer's job).
  """
  info = find_checkpoint(workdir, checkpoint)
  candidates = [info]
  if str(checkpoint) == "latest":
    directory = os.path.dirname(info.path)
    candidates += [CheckpointInfo("step", os.path.join(directory, str(step)), step,
                                  reason="newest readable")
                   for step in reversed(checkpoint_steps(workdir)[:-1])]
  failures = []
  for candidate in candidates:
    try:
      problem = checkpoint_integrity.verify(candidate.path) if candidate.kind == "step" else None
      if problem:
        raise ValueError(f"checksum mismatch: {problem}")
      config = load_model_config(workdir, candidate)
      params = restore_params(candidate, config)
    except WorkdirError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      if str(checkpoint) != "latest":
        raise WorkdirError(f"Cannot read the checkpoint {candidate.path}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:300] if str(e) else ''}") from e
      failures.append(candidate.step)
      logging.warning("The checkpoint of step %d (%s) cannot be read (%s: %s); trying the "
                      "previous one.", candidate.step, candidate.path, type(e).__name__,
                      str(e).splitlines()[0][:300] if str(e) else "")
      continue
    if failures:
      logging.warning("Using the checkpoint of step %d: the newer step(s) %s cannot be read.",
                      candidate.step, line_list(failures))
    logging.info("Loaded parameters: %s", candidate.describe())
    return params, config, candidate
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  raise WorkdirError(f"No readable checkpoint in {directory}: step(s) {line_list(failures)} "
                     "cannot be read (see the warnings above).")


def translator_from_workdir(workdir: str, checkpoint: str | int = "latest", **kwargs
                            ) -> tuple[Translator, CheckpointInfo]:
  """A Translator for WORKDIR's tokenizer and chosen checkpoint; kwargs go to Translator
  (beam_size, length_penalty, max_extra, batch_size; defaults from the run config when
  recorded)."""
  tokenizer = load_tokenizer(workdir)
  params, config, info = load_params(workdir, checkpoint)
  if config.architecture != "encoder_decoder":
    raise WorkdirError(f"{os.path.abspath(workdir)} holds a {config.architecture} model (a "
                       "language model), which does not translate; sample from it with "
                       f"`python -m transformer.sample --workdir={workdir}`.")
  if tokenizer.vocab_size != config.vocab_size:
    raise WorkdirError(f"The tokenizer in {workdir} has {tokenizer.vocab_size} pieces but the "
                       f"checkpoint's model has vocab_size={config.vocab_size}: they are not from "
                       "the same run.")
  run = load_run_config(workdir)
  if run is not None:
    defaults = {"beam_size": run.get("beam_size"), "length_penalty": run.get("length_penalty"),
                "max_extra": run.get("max_decode_extra")}
    for key, value in defaults.items():
      if kwargs.get(key) is None and value is not None:
        kwargs[key] = value
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  return Translator(config, params, tokenizer, **kwargs), info
