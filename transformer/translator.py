"""Translating text with a trained model: length-bucketed batches, one compiled search per bucket.

```python
translator = Translator(model_config, params, tokenizer, beam_size=4, alpha=0.6)
translator.translate(["Ein Haus.", "", "Zwei Hunde spielen."])    # -> 3 strings, in order
translator.translate_detailed(lines)         # -> [Translation(text, candidates, scores, ...)]

translator = translator_from_workdir("runs/x", checkpoint="averaged")   # latest | best | averaged
```

How a list of sentences is translated (§6.1 settings by default: beam 4, alpha 0.6, output at
most input length + 50 tokens):

  1. Each line is encoded (SentencePiece, then EOS). Empty lines are not decoded: they give "".
     Lines longer than the model's `max_len` are cut to `max_len - 1` tokens + EOS, with a
     warning naming the line numbers.
  2. Lines are sorted by length and put into length buckets (8, 16, 32, 64, ... up to
     `max_len`); a bucket is cut into batches of `batch_size` rows, padded to the bucket length.
     A last, partial batch is padded to the next power of two rows with EOS-only rows (limit 1
     token, so they end at the first step). Each (bucket, rows, beam, alpha) is one XLA program,
     so a file compiles a handful of programs, not one per batch shape.
  3. One jit-compiled function per program: `init_decode_cache` (the encoder runs once and the
     cross-attention keys and values are cached) then `beam_search` (`beam_size=1` is greedy
     search) inside a `lax.while_loop`, with the per-sentence limit `max_lengths = source
     tokens (EOS included) + max_extra` and the bucket's output length `min(bucket + max_extra,
     max_len)`.
  4. The outputs are decoded and put back in input order.

Loading from a workdir (the trainer's layout, transformer/training/checkpointing.py): the
tokenizer `WORKDIR/tokenizer.model`, the run config `WORKDIR/config.json`, and Orbax checkpoints
`WORKDIR/checkpoints/<step>/{state,model,data_iter}`; only `state.params` is read. The averaged
checkpoint written by `python -m transformer.average` is `WORKDIR/averaged/{params,model,
averaging}`. `checkpoint` selects one of them:

  latest    the newest step in WORKDIR/checkpoints.
  best      the kept step with the best validation score in WORKDIR/metrics.jsonl (split "eval"):
            the highest "bleu" if the trainer recorded one, else the lowest "nll".
  averaged  WORKDIR/averaged.
  <step>    that step; or a path to a step directory or an averaged checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging as pylogging
import math
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from transformer.config import EOS_ID, PAD_ID, TransformerConfig
from transformer.decoding import beam_search
from transformer.model import Transformer, decode_step, init_decode_cache, is_source_cache

CHECKPOINT_CHOICES = ("latest", "best", "averaged")
TOKENIZER_FILENAME = "tokenizer.model"  # as transformer/data/tokenizer.py writes it
AVERAGED_DIRNAME = "averaged"
BUCKET_LADDER = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
VALIDATION_SPLIT = "eval"  # the split name the trainer writes validation metrics under


class WorkdirError(FileNotFoundError):
  """Something a command needs is not in the workdir; the message says what and how to make it."""


def line_list(numbers: Sequence[int], limit: int = 20) -> str:
  """"3, 7, 12" (1-based line numbers), "... and N more" past `limit`."""
  shown = ", ".join(str(n) for n in numbers[:limit])
  return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def length_buckets(max_len: int) -> list[int]:
  """Bucket lengths: the ladder 8, 16, 32, ... below `max_len`, then `max_len`."""
  return [b for b in BUCKET_LADDER if b < max_len] + [max_len]


def _rows_for(count: int, batch_size: int) -> int:
  """Rows of a batch holding `count` sentences: batch_size, or the next power of two below it."""
  if count >= batch_size:
    return batch_size
  return min(batch_size, 1 << max(0, (count - 1).bit_length()))


@functools.partial(jax.jit, static_argnames=("config", "beam_size", "alpha", "max_decode_len",
                                             "eos_id"))
def decode_batch(params: Any, inputs: jax.Array, max_lengths: jax.Array, *,
                 config: TransformerConfig, beam_size: int, alpha: float,
                 max_decode_len: int, eos_id: int = EOS_ID) -> tuple[jax.Array, jax.Array]:
  """Encodes `inputs` int32 [B, S] once and searches: (sequences [B, beam, L], scores [B, beam]).

  Compiled once per (shapes, config, beam_size, alpha, max_decode_len). Sequences carry no BOS,
  end with EOS and are PAD after it; scores are log p / GNMT length penalty, best first.
  """
  cache = init_decode_cache(config, params, inputs, max_decode_len)

  def tokens_to_logits(tokens, cache):
    return decode_step(config, params, cache, tokens)

  return beam_search(tokens_to_logits, cache, batch_size=inputs.shape[0], beam_size=beam_size,
                     alpha=alpha, max_decode_len=max_decode_len, max_lengths=max_lengths,
                     eos_id=eos_id, source_only=is_source_cache)


@dataclasses.dataclass
class Translation:
  """One line's result.

  text: the best translation ("" for an empty line).
  candidates: the beam's hypotheses, best first (only the one for greedy search; none for an
    empty line); slots the search could not fill are left out.
  scores: their scores, log p(y | x) / ((5 + |y|) / 6) ** alpha (docs/decoding.md).
  tokens: the best hypothesis's token ids, EOS excluded.
  source_tokens: source tokens fed to the model, EOS included (0 for an empty line).
  truncated: the source was longer than the model's max_len and was cut.
  """
  text: str
  candidates: list[str]
  scores: list[float]
  tokens: list[int]
  source_tokens: int
  truncated: bool = False


class Translator:
  """Translates lists of strings with one model (see the module docstring for the method).

  Args:
    config: the model's TransformerConfig (the one it was trained with).
    params: its parameters (the `params` collection).
    tokenizer: anything with `encode(text) -> ids` (no BOS/EOS) and `decode(ids) -> text`.
    beam_size: 1 is greedy search; the paper uses 4.
    alpha: GNMT length-penalty exponent (0.6 in the paper).
    max_extra: output limit = source tokens + max_extra (50 in the paper), at most max_len.
    batch_size: sentences per batch (each is beam_size rows of the search).
    buckets: source bucket lengths; default 8, 16, 32, ... up to max_len.
  """

  def __init__(self, config: TransformerConfig, params: Any, tokenizer, *, beam_size: int = 4,
               alpha: float = 0.6, max_extra: int = 50, batch_size: int = 64,
               buckets: Sequence[int] | None = None):
    for name, value in (("beam_size", beam_size), ("batch_size", batch_size)):
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    if not isinstance(max_extra, int) or max_extra < 0:
      raise ValueError(f"max_extra={max_extra!r} must be a non-negative integer.")
    self.config = config.replace(decode=False, deterministic=True)
    self.params = _to_local(params)
    self.tokenizer = tokenizer
    self.beam_size, self.alpha = beam_size, float(alpha)
    self.max_extra, self.batch_size = max_extra, batch_size
    buckets = sorted({min(int(b), config.max_len) for b in (buckets or length_buckets(
        config.max_len))})
    if buckets[0] < 1:
      raise ValueError(f"buckets={buckets} must be positive lengths.")
    if buckets[-1] < config.max_len:
      buckets.append(config.max_len)
    self.buckets = buckets

  # --- Encoding -------------------------------------------------------------------------------

  def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Source ids per line (EOS-terminated, [] for an empty line) and the truncated lines'
    0-based indices."""
    limit = self.config.max_len - 1  # room for EOS
    encoded, truncated = [], []
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"texts[{i}] is {type(text).__name__}; expected str.")
      ids = list(self.tokenizer.encode(text)) if text.strip() else []
      if not ids:
        encoded.append([])
        continue
      if len(ids) > limit:
        truncated.append(i)
        ids = ids[:limit]
      encoded.append(ids + [EOS_ID])
    if truncated:
      logging.warning(
          "%d line(s) longer than the model's maximum of %d tokens (max_len %d, EOS included) "
          "were truncated: line(s) %s.", len(truncated), limit, self.config.max_len,
          line_list([i + 1 for i in truncated]))
    return encoded, truncated

  # --- Translating ----------------------------------------------------------------------------

  def translate(self, texts: Sequence[str], *, beam_size: int | None = None,
                alpha: float | None = None,
                progress: Callable[[int], Any] | None = None) -> list[str]:
    """One translation per line, in input order ("" for an empty line)."""
    return [t.text for t in self.translate_detailed(texts, beam_size=beam_size, alpha=alpha,
                                                    progress=progress)]

  def translate_detailed(self, texts: Sequence[str], *, beam_size: int | None = None,
                         alpha: float | None = None,
                         progress: Callable[[int], Any] | None = None) -> list[Translation]:
    """`Translation`s (best text, beam candidates and scores), in input order.

    `progress(n)` is called after each batch with the number of lines it finished (empty
    lines are counted at the start).
    """
    if isinstance(texts, str):
      raise TypeError("texts must be a list of strings, not one string.")
    texts = list(texts)
    encoded, truncated = self.encode(texts)
    results = self.translate_ids(encoded, beam_size=beam_size, alpha=alpha, progress=progress)
    out, cut = [], set(truncated)
    for i, (ids, (seqs, scores)) in enumerate(zip(encoded, results)):
      candidates = [self.tokenizer.decode(s) for s in seqs]
      out.append(Translation(text=candidates[0] if candidates else "", candidates=candidates,
                             scores=list(scores), tokens=list(seqs[0]) if seqs else [],
                             source_tokens=len(ids), truncated=i in cut))
    return out

  def translate_ids(self, encoded: Sequence[Sequence[int]], *, beam_size: int | None = None,
                    alpha: float | None = None, progress: Callable[[int], Any] | None = None
                    ) -> list[tuple[list[list[int]], list[float]]]:
    """Per source (EOS-terminated ids, at most max_len; [] = empty): (hypotheses, scores), best
    first, each hypothesis the output ids without EOS. Empty sources give ([], [])."""
    beam_size = self.beam_size if beam_size is None else beam_size
    alpha = self.alpha if alpha is None else float(alpha)
    if not isinstance(beam_size, int) or beam_size < 1:
      raise ValueError(f"beam_size={beam_size!r} must be a positive integer.")
    lengths = np.array([len(ids) for ids in encoded], np.int64)
    if lengths.size and lengths.max() > self.config.max_len:
      bad = np.nonzero(lengths > self.config.max_len)[0]
      raise ValueError(f"sources {line_list([int(i) for i in bad])} (0-based) are longer than "
                       f"max_len={self.config.max_len}; truncate them (Translator.encode does).")
    results: list[tuple[list[list[int]], list[float]]] = [([], [])] * len(encoded)
    if progress is not None and np.sum(lengths == 0):
      progress(int(np.sum(lengths == 0)))
    order = [int(i) for i in np.argsort(-lengths, kind="stable") if lengths[i] > 0]
    for bucket, members in self._bucketize(order, lengths):
      for start in range(0, len(members), self.batch_size):
        batch = members[start:start + self.batch_size]
        for i, hyps in zip(batch, self._search(bucket, [encoded[i] for i in batch], beam_size,
                                               alpha)):
          results[i] = hyps
        if progress is not None:
          progress(len(batch))
    return results

  def _bucketize(self, order: list[int], lengths: np.ndarray):
    """(bucket length, member indices longest first) for each non-empty bucket."""
    groups: dict[int, list[int]] = {}
    for i in order:
      bucket = next(b for b in self.buckets if b >= lengths[i])
      groups.setdefault(bucket, []).append(i)
    return sorted(groups.items(), reverse=True)

  def _search(self, bucket: int, sources: list[Sequence[int]], beam_size: int, alpha: float):
    rows = _rows_for(len(sources), self.batch_size)
    inputs = np.full((rows, bucket), PAD_ID, np.int32)
    inputs[:, 0] = EOS_ID  # filler rows: an empty source, limit 1 -> they end at once
    max_lengths = np.ones((rows,), np.int32)
    for r, ids in enumerate(sources):
      inputs[r, :] = PAD_ID
      inputs[r, :len(ids)] = ids
      max_lengths[r] = len(ids) + self.max_extra
    max_decode_len = min(bucket + self.max_extra, self.config.max_len)
    seqs, scores = decode_batch(self.params, inputs, max_lengths, config=self.config,
                                beam_size=beam_size, alpha=alpha, max_decode_len=max_decode_len)
    seqs, scores = jax.device_get((seqs, scores))
    out = []
    for r in range(len(sources)):
      hyps, hyp_scores = [], []
      for k in range(seqs.shape[1]):
        if not np.isfinite(scores[r, k]):
          continue
        row = seqs[r, k].tolist()
        hyps.append(row[:row.index(EOS_ID)] if EOS_ID in row else row)
        hyp_scores.append(float(scores[r, k]))
      out.append((hyps, hyp_scores))
    return out


def _to_local(params: Any) -> Any:
  """Parameters usable by this process's jit: gathered if they span several hosts."""
  leaves = jax.tree.leaves(params)
  if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves):
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return jax.tree.map(lambda x: multihost_utils.process_allgather(x, tiled=True), params)
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), params)


# -------------------------------------------------------------------------------------------------
# Loading from a workdir.


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


def _quiet_orbax() -> None:
  """Orbax logs several INFO lines per restore; keep its warnings."""
  try:
    from transformer.training.checkpointing import quiet_orbax_logs  # pylint: disable=g-import-not-at-top
    quiet_orbax_logs()
  except ImportError:  # pragma: no cover
    pylogging.getLogger("absl").setLevel(pylogging.WARNING)


def load_tokenizer(workdir: str):
  """WORKDIR/tokenizer.model (never trains one: a new vocabulary would not fit the model)."""
  path = os.path.join(workdir, TOKENIZER_FILENAME)
  if not os.path.exists(path):
    raise WorkdirError(
        f"No tokenizer in {os.path.abspath(workdir)}: {TOKENIZER_FILENAME} is missing. The "
        f"trainer writes it before the first step; train a model with {_train_hint(workdir)}, "
        "or pass --workdir of a trained run.")
  from transformer.data.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  return Tokenizer.load(path)


def load_run_config(workdir: str):
  """The run config the trainer resolved (WORKDIR/config.json "config") as a ConfigDict, or None."""
  record = _read_config_json(workdir)
  if record is None or "config" not in record:
    return None
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(record["config"])


def _read_config_json(workdir: str) -> dict | None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def model_config_from_json(record: dict) -> TransformerConfig:
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  return TransformerConfig(**{k: v for k, v in record.items() if k in fields})


def checkpoint_steps(workdir: str) -> list[int]:
  """Complete checkpoint steps in WORKDIR/checkpoints, oldest first ([] if none)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _quiet_orbax()
  manager = ocp.CheckpointManager(os.path.abspath(directory))
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def _no_checkpoint_error(workdir: str) -> WorkdirError:
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
    raise _no_checkpoint_error(workdir)
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
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.path.join(path, "averaging")):
    return {}
  _quiet_orbax()
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  return checkpointer.restore(path, args=ocp.args.Composite(
      averaging=ocp.args.JsonRestore()))["averaging"]


def load_model_config(workdir: str, info: CheckpointInfo | None = None) -> TransformerConfig:
  """The TransformerConfig of a checkpoint: its `model` item, else WORKDIR/config.json."""
  if info is not None and os.path.isdir(os.path.join(info.path, "model")):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    _quiet_orbax()
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


def abstract_params(config: TransformerConfig, sharding=None) -> Any:
  """ShapeDtypeStructs of the model's parameters (no computation), on one device by default."""
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  dummy = jax.ShapeDtypeStruct((1, min(8, config.max_len)), jnp.int32)
  model = Transformer(config.replace(deterministic=True))
  shapes = jax.eval_shape(lambda r, x: model.init(r, x, x)["params"], jax.random.PRNGKey(0),
                          dummy)
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)


def restore_params(info: CheckpointInfo, config: TransformerConfig, sharding=None) -> Any:
  """Reads only the parameters of a checkpoint (a trainer step's `state.params`, or an averaged
  checkpoint's `params`) onto one device (or `sharding`)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _quiet_orbax()
  target = abstract_params(config, sharding)
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
  """(params, model config, which checkpoint) from a workdir."""
  info = find_checkpoint(workdir, checkpoint)
  config = load_model_config(workdir, info)
  params = restore_params(info, config)
  logging.info("Loaded parameters: %s", info.describe())
  return params, config, info


def translator_from_workdir(workdir: str, checkpoint: str | int = "latest", **kwargs
                            ) -> tuple[Translator, CheckpointInfo]:
  """A Translator for WORKDIR's tokenizer and chosen checkpoint; kwargs go to Translator
  (beam_size, alpha, max_extra, batch_size; defaults from the run config when recorded)."""
  tokenizer = load_tokenizer(workdir)
  params, config, info = load_params(workdir, checkpoint)
  if tokenizer.vocab_size != config.vocab_size:
    raise WorkdirError(f"{os.path.join(workdir, TOKENIZER_FILENAME)} has {tokenizer.vocab_size} "
                       f"pieces but the checkpoint's model has vocab_size={config.vocab_size}: "
                       "they are not from the same run.")
  run = load_run_config(workdir)
  if run is not None:
    defaults = {"beam_size": run.get("beam_size"), "alpha": run.get("length_penalty"),
                "max_extra": run.get("max_decode_extra")}
    for key, value in defaults.items():
      if kwargs.get(key) is None and value is not None:
        kwargs[key] = value
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  return Translator(config, params, tokenizer, **kwargs), info
