"""Translating text with a trained model: length-bucketed batches, one compiled search per bucket.

```python
translator = Translator(model_config, params, tokenizer, beam_size=4, length_penalty=0.6)
translator.translate(["Ein Haus.", "", "Zwei Hunde spielen."])    # -> 3 strings, in order
translator.translate_detailed(lines)         # -> [Translation(text, candidates, scores, ...)]

translator, info = workdir.translator_from_workdir("runs/x", checkpoint="averaged")
```

How a list of sentences is translated (§6.1 settings by default: beam 4, length_penalty 0.6,
output at most input length + 50 tokens):

  1. Each line is encoded (SentencePiece, then EOS). Empty lines are not decoded: they give "".
     Lines longer than the model's `max_length` are cut to `max_length - 1` tokens + EOS, with a
     warning naming the line numbers.
  2. Lines are sorted by length and put into length buckets (8, 16, 32, 64, ... up to
     `max_length`); a bucket is cut into batches of `batch_size` rows, padded to the bucket length.
     A last, partial batch is padded to the next power of two rows with EOS-only rows (limit 1
     token, so they end at the first step). Each (bucket, rows, beam, length_penalty) is one XLA
     program, so a file compiles a handful of programs, not one per batch shape.
  3. One jit-compiled function per program: `init_decode_cache` (the encoder runs once and the
     cross-attention keys and values are cached) then `beam_search` (`beam_size=1` is greedy
     search) inside a `lax.while_loop`, with the per-sentence limit `max_lengths = source
     tokens (EOS included) + max_extra` and the bucket's output length `min(bucket + max_extra,
     max_length)`.
  4. The outputs are decoded and put back in input order.

`transformer.workdir.translator_from_workdir` builds a Translator from a training workdir: the
tokenizer and the checkpoint it reads (`checkpoint`: latest | best | averaged | <step> |
a directory).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from transformer.cli import line_list
from transformer.config import EOS_ID, PAD_ID, TransformerConfig
from transformer.decoding import beam_search
from transformer.model import decode_step, init_decode_cache, is_sentence_cache

BUCKET_LADDER = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def length_buckets(max_length: int) -> list[int]:
  """Bucket lengths: the ladder 8, 16, 32, ... below `max_length`, then `max_length`."""
  return [b for b in BUCKET_LADDER if b < max_length] + [max_length]


def _rows_for(count: int, batch_size: int) -> int:
  """Rows of a batch holding `count` sentences: batch_size, or the next power of two below it."""
  if count >= batch_size:
    return batch_size
  return min(batch_size, 1 << max(0, (count - 1).bit_length()))


ROWS = "rows"  # the mesh axis a batch's sentences are split along


def rows_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
  """The mesh decoding splits a batch's sentences over: this process's devices (all of its
  local devices by default), or None for one device."""
  devices = list(jax.local_devices() if devices is None else devices)
  return Mesh(np.array(devices), (ROWS,)) if len(devices) > 1 else None


@functools.partial(jax.jit, static_argnames=("config", "beam_size", "length_penalty",
                                             "max_decode_len", "eos_id", "mesh"))
def decode_batch(params: Any, inputs: jax.Array, max_lengths: jax.Array, *,
                 config: TransformerConfig, beam_size: int, length_penalty: float,
                 max_decode_len: int, eos_id: int = EOS_ID,
                 mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
  """Encodes `inputs` int32 [B, S] once and searches: (sequences [B, beam, L], scores [B, beam]).

  Compiled once per (shapes, config, beam_size, length_penalty, max_decode_len, mesh). Sequences
  carry no BOS, end with EOS and are PAD after it; scores are log p / GNMT length penalty, best
  first. With a `mesh` (rows_mesh; B a multiple of its size) each device searches its share of
  the sentences with the parameters replicated, as one program with no communication: the
  sentences of a batch are independent, and each share stops when its own sentences are done.
  """
  def search(params, inputs, max_lengths):
    cache = init_decode_cache(config, params, inputs, max_decode_len, beams=beam_size)

    def tokens_to_logits(tokens, cache):
      return decode_step(config, params, cache, tokens)

    return beam_search(tokens_to_logits, cache, batch_size=inputs.shape[0], beam_size=beam_size,
                       length_penalty=length_penalty, max_decode_len=max_decode_len,
                       max_lengths=max_lengths, eos_id=eos_id, per_sentence=is_sentence_cache)

  if mesh is None:
    return search(params, inputs, max_lengths)
  # check_vma=False: the search's loop carries start as constants and become per-device values.
  return jax.shard_map(search, mesh=mesh, in_specs=(P(), P(ROWS), P(ROWS)), out_specs=P(ROWS),
                       check_vma=False)(params, inputs, max_lengths)


@dataclasses.dataclass
class Translation:
  """One line's result.

  text: the best translation ("" for an empty line).
  candidates: the beam's hypotheses, best first (only the one for greedy search; none for an
    empty line); slots the search could not fill are left out.
  scores: their scores, log p(y | x) / ((5 + |y|) / 6) ** length_penalty (docs/decoding.md).
  tokens: the best hypothesis's token ids, EOS excluded.
  source_tokens: source tokens fed to the model, EOS included (0 for an empty line).
  truncated: the source was longer than the model's max_length and was cut.
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
    length_penalty: GNMT length-penalty exponent (0.6 in the paper).
    max_extra: output limit = source tokens + max_extra (50 in the paper), at most max_length.
    batch_size: sentences per batch (each is beam_size rows of the search).
    buckets: source bucket lengths; default 8, 16, 32, ... up to max_length.
    devices: the devices a batch's sentences are split over (`decode_batch`'s mesh), the
      parameters replicated on each; default this process's local devices (on a CPU host, one
      per core with `config.cpu_devices`: cpu_devices.py).
  """

  def __init__(self, config: TransformerConfig, params: Any, tokenizer, *, beam_size: int = 4,
               length_penalty: float = 0.6, max_extra: int = 50, batch_size: int = 64,
               buckets: Sequence[int] | None = None,
               devices: Sequence[jax.Device] | None = None):
    for name, value in (("beam_size", beam_size), ("batch_size", batch_size)):
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    if not isinstance(max_extra, int) or max_extra < 0:
      raise ValueError(f"max_extra={max_extra!r} must be a non-negative integer.")
    self.config = config.replace(decode=False, deterministic=True)
    self.mesh = rows_mesh(devices)
    self.params = local_params(params, self.mesh)
    self.tokenizer = tokenizer
    self.beam_size, self.length_penalty = beam_size, float(length_penalty)
    self.max_extra, self.batch_size = max_extra, batch_size
    buckets = sorted({min(int(b), config.max_length) for b in (buckets or length_buckets(
        config.max_length))})
    if buckets[0] < 1:
      raise ValueError(f"buckets={buckets} must be positive lengths.")
    if buckets[-1] < config.max_length:
      buckets.append(config.max_length)
    self.buckets = buckets

  # --- Encoding -------------------------------------------------------------------------------

  def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Source ids per line (EOS-terminated, [] for an empty line) and the truncated lines'
    0-based indices."""
    limit = self.config.max_length - 1  # room for EOS
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
          "%d line(s) longer than the model's maximum of %d tokens (max_length %d, EOS included) "
          "were truncated: line(s) %s.", len(truncated), limit, self.config.max_length,
          line_list([i + 1 for i in truncated]))
    return encoded, truncated

  # --- Translating ----------------------------------------------------------------------------

  def translate(self, texts: Sequence[str], *, beam_size: int | None = None,
                length_penalty: float | None = None,
                progress: Callable[[int], Any] | None = None) -> list[str]:
    """One translation per line, in input order ("" for an empty line)."""
    return [t.text for t in self.translate_detailed(
        texts, beam_size=beam_size, length_penalty=length_penalty, progress=progress)]

  def translate_detailed(self, texts: Sequence[str], *, beam_size: int | None = None,
                         length_penalty: float | None = None,
                         progress: Callable[[int], Any] | None = None) -> list[Translation]:
    """`Translation`s (best text, beam candidates and scores), in input order.

    `progress(n)` is called after each batch with the number of lines it finished (empty
    lines are counted at the start).
    """
    if isinstance(texts, str):
      raise TypeError("texts must be a list of strings, not one string.")
    texts = list(texts)
    encoded, truncated = self.encode(texts)
    results = self.translate_ids(encoded, beam_size=beam_size, length_penalty=length_penalty,
                                 progress=progress)
    out, cut = [], set(truncated)
    for i, (ids, (seqs, scores)) in enumerate(zip(encoded, results)):
      candidates = [self.tokenizer.decode(s) for s in seqs]
      out.append(Translation(text=candidates[0] if candidates else "", candidates=candidates,
                             scores=list(scores), tokens=list(seqs[0]) if seqs else [],
                             source_tokens=len(ids), truncated=i in cut))
    return out

  def translate_ids(self, encoded: Sequence[Sequence[int]], *, beam_size: int | None = None,
                    length_penalty: float | None = None,
                    progress: Callable[[int], Any] | None = None
                    ) -> list[tuple[list[list[int]], list[float]]]:
    """Per source (EOS-terminated ids, at most max_length; [] = empty): (hypotheses, scores), best
    first, each hypothesis the output ids without EOS. Empty sources give ([], [])."""
    beam_size = self.beam_size if beam_size is None else beam_size
    length_penalty = self.length_penalty if length_penalty is None else float(length_penalty)
    if not isinstance(beam_size, int) or beam_size < 1:
      raise ValueError(f"beam_size={beam_size!r} must be a positive integer.")
    lengths = np.array([len(ids) for ids in encoded], np.int64)
    if lengths.size and lengths.max() > self.config.max_length:
      bad = np.nonzero(lengths > self.config.max_length)[0]
      raise ValueError(f"sources {line_list([int(i) for i in bad])} (0-based) are longer than "
                       f"max_length={self.config.max_length}; truncate them (Translator.encode "
                       "does).")
    results: list[tuple[list[list[int]], list[float]]] = [([], [])] * len(encoded)
    if progress is not None and np.sum(lengths == 0):
      progress(int(np.sum(lengths == 0)))
    order = [int(i) for i in np.argsort(-lengths, kind="stable") if lengths[i] > 0]
    for bucket, members in self._bucketize(order, lengths):
      for start in range(0, len(members), self.batch_size):
        batch = members[start:start + self.batch_size]
        for i, hyps in zip(batch, self._search(bucket, [encoded[i] for i in batch], beam_size,
                                               length_penalty)):
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

  def _search(self, bucket: int, sources: list[Sequence[int]], beam_size: int,
              length_penalty: float):
    rows = _rows_for(len(sources), self.batch_size)
    if self.mesh is not None:  # an equal share per device
      rows = -(-rows // self.mesh.size) * self.mesh.size
    inputs = np.full((rows, bucket), PAD_ID, np.int32)
    inputs[:, 0] = EOS_ID  # filler rows: an empty source, limit 1 -> they end at once
    max_lengths = np.ones((rows,), np.int32)
    for r, ids in enumerate(sources):
      inputs[r, :] = PAD_ID
      inputs[r, :len(ids)] = ids
      max_lengths[r] = len(ids) + self.max_extra
    max_decode_len = min(bucket + self.max_extra, self.config.max_length)
    inputs, max_lengths = split_rows(self.mesh, inputs, max_lengths)
    seqs, scores = decode_batch(self.params, inputs, max_lengths, config=self.config,
                                beam_size=beam_size, length_penalty=length_penalty,
                                max_decode_len=max_decode_len, mesh=self.mesh)
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


def split_rows(mesh: Mesh | None, *arrays):
  """`arrays` (batch first) split by rows over `mesh`, as `decode_batch` takes them; as they are
  without a mesh."""
  return jax.device_put(arrays, NamedSharding(mesh, P(ROWS))) if mesh is not None else arrays


def local_params(params: Any, mesh: Mesh | None) -> Any:
  """Parameters usable by this process's jit: gathered if they span several hosts, then
  replicated on `mesh` (a no-op for parameters already replicated there)."""
  leaves = jax.tree.leaves(params)
  if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves):
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    params = jax.tree.map(lambda x: multihost_utils.process_allgather(x, tiled=True), params)
  if mesh is not None:
    return jax.device_put(params, NamedSharding(mesh, P()))
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), params)
