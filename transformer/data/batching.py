"""Tokenized examples and the three ways to cut them into batches: padded, token budget, packed.

Each training epoch is a *plan*: a seeded permutation of the examples (`seed`, `epoch`) cut into
windows, and each window into batches. A batch is a function of (seed, epoch, window, batch), so
the iterator state is three integers; restoring it gives exactly the batches the uninterrupted
run would have seen, and every example appears once per epoch.

  * "padded": `rows` examples per batch, each padded to `max_length`: one shape, one compile.
  * "tokens": §5.1 of the paper: batches of similar-length pairs under a token budget. Each pair
    goes to the smallest length bucket that holds both its sides; a bucket-L batch has
    `budget // L` rows (a multiple of the row unit), so `rows * L <= budget` for inputs and for
    targets, and XLA compiles one program per bucket. The plan is global (every host computes
    it from the lengths of the whole split) and each host takes its slice of every batch's rows,
    so all hosts agree on each step's shape.
  * "packed": several pairs per row of `max_length`, first-fit decreasing over a window of
    examples, with `*_segmentation` (1, 2, ... per pair, 0 on padding) and `*_position`
    (restarting at 0 for every pair).

Rows with no example (the end of an epoch) are all PAD; the loss weights them zero.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import grain
import numpy as np
from absl import logging

from transformer.config import EOS_ID, PAD_ID
from transformer.data import parallel_encoding
from transformer.data.ranges import concatenated_ranges

BATCHINGS = ("padded", "tokens", "packed")
OVERLONG = ("drop", "truncate")


# ---------------------------------------------------------------------------------------------
# Tokenized examples.


@dataclasses.dataclass
class Examples:
  """Tokenized, EOS-terminated pairs stored flat: source i is `src[src_off[i]:src_off[i+1]]`."""

  src: np.ndarray       # [total source tokens] int32
  src_off: np.ndarray   # [n + 1] int64
  tgt: np.ndarray
  tgt_off: np.ndarray

  def __len__(self) -> int:
    return len(self.src_off) - 1

  @functools.cached_property
  def src_len(self) -> np.ndarray:
    return np.diff(self.src_off)

  @functools.cached_property
  def tgt_len(self) -> np.ndarray:
    return np.diff(self.tgt_off)

  def source(self, i: int) -> np.ndarray:
    return self.src[self.src_off[i]:self.src_off[i + 1]]

  def target(self, i: int) -> np.ndarray:
    return self.tgt[self.tgt_off[i]:self.tgt_off[i + 1]]


def _with_eos(flat: np.ndarray, lengths: np.ndarray, keep: np.ndarray,
              limit: int) -> tuple[np.ndarray, np.ndarray]:
  """The kept sequences, each cut to `limit` ids and ended with EOS: (flat ids, offsets)."""
  kept_lengths = lengths[keep]
  n = np.minimum(kept_lengths, limit)
  offsets = np.zeros(len(n) + 1, np.int64)
  np.cumsum(n + 1, out=offsets[1:])
  if (kept_lengths <= limit).all():  # nothing cut: the kept ids with an EOS after each
    kept_ids = flat if keep.all() else flat[np.repeat(keep, lengths)]
    return np.insert(kept_ids, offsets[1:] - np.arange(1, len(n) + 1), EOS_ID), offsets
  begin = (np.cumsum(lengths) - lengths)[keep]
  out = np.empty(int(offsets[-1]), np.int32)
  out[concatenated_ranges(offsets[:-1], n)] = flat[concatenated_ranges(begin, n)]
  out[offsets[1:] - 1] = EOS_ID
  return out, offsets


def encode_examples(pairs: Sequence[tuple[str, str]], tok, *, max_length: int,
                    overlong: str = "drop", keep_empty: bool = False,
                    what: str = "") -> Examples:
  """Tokenizes pairs, appends EOS, skips empty pairs and drops or truncates overlong ones.

  Every skipped, dropped or truncated pair is counted in one log line. Large splits are tokenized
  on every usable core (parallel_encoding.py); the rest is numpy over all pairs at once.
  """
  if overlong not in OVERLONG:
    raise ValueError(f"config.overlong={overlong!r} is unknown; allowed: {', '.join(OVERLONG)}.")
  if max_length < 2:
    raise ValueError(f"config.max_length={max_length} must be at least 2 (a token and EOS).")
  src, src_len, tgt, tgt_len, num_empty = parallel_encoding.encode_pairs(
      tok, pairs, keep_empty=keep_empty)
  long = (src_len >= max_length) | (tgt_len >= max_length)    # EOS makes each one longer
  keep = ~long if overlong == "drop" else np.ones(len(src_len), bool)
  src, src_off = _with_eos(src, src_len, keep, max_length - 1)
  tgt, tgt_off = _with_eos(tgt, tgt_len, keep, max_length - 1)
  verb = "dropped" if overlong == "drop" else "truncated"
  logging.info("%s: %d of %d pairs kept; %d empty pairs skipped; %d pairs longer than "
               "max_length=%d tokens (EOS included) %s (config.overlong=%r).",
               what or "examples", len(src_off) - 1, len(pairs), num_empty, int(long.sum()),
               max_length, verb, overlong)
  return Examples(src, src_off, tgt, tgt_off)


# ---------------------------------------------------------------------------------------------
# Building one batch from example indices. Vectorized: a batch is a few numpy gathers and
# scatters over its tokens, never a Python loop over rows or examples.


def _place(flat: np.ndarray, offsets: np.ndarray, examples: np.ndarray, rows: np.ndarray,
           num_rows: int, length: int, segments: np.ndarray | None = None):
  """Copies each example's tokens to its row of a [num_rows, length] batch, one after another.

  `examples` are grouped by row (`rows` non-decreasing, each row's examples in order), so the
  examples' tokens in that order are the batch's non-pad cells in row-major order. Returns the
  ids, and with `segments` (the 1-based segment id of each example) also the segmentation and
  the positions (0 at the start of every example).
  """
  begin = offsets[examples]
  n = offsets[examples + 1] - begin
  cells = np.arange(length) < np.bincount(rows, n, num_rows)[:, None]
  ids = np.full((num_rows, length), PAD_ID, np.int32)
  ids[cells] = flat[concatenated_ranges(begin, n)]
  if segments is None:
    return ids
  seg = np.zeros((num_rows, length), np.int32)
  pos = np.zeros((num_rows, length), np.int32)
  seg[cells] = np.repeat(segments, n)
  pos[cells] = concatenated_ranges(np.zeros_like(n), n)
  return ids, seg, pos


def pad_batch(ex: Examples, indices: Sequence[int], length: int) -> dict[str, np.ndarray]:
  """One example per row (index -1 = an all-PAD row), padded to `length`."""
  indices = np.asarray(indices, np.int64)
  rows = np.flatnonzero(indices >= 0)
  examples = indices[rows]
  return {"inputs": _place(ex.src, ex.src_off, examples, rows, len(indices), length),
          "targets": _place(ex.tgt, ex.tgt_off, examples, rows, len(indices), length)}


def pack_batch(ex: Examples, examples: np.ndarray, rows: np.ndarray, num_rows: int,
               length: int) -> dict[str, np.ndarray]:
  """Several examples per row: example `examples[i]` goes to row `rows[i]` (non-decreasing),
  after the row's earlier examples; rows no example names are all PAD."""
  examples, rows = np.asarray(examples, np.int64), np.asarray(rows, np.int64)
  index = np.arange(len(rows))
  first = np.ones(len(rows), bool)
  first[1:] = rows[1:] != rows[:-1]
  segments = (index - np.maximum.accumulate(np.where(first, index, 0)) + 1).astype(np.int32)
  out = {}
  for key, flat, offsets in (("inputs", ex.src, ex.src_off), ("targets", ex.tgt, ex.tgt_off)):
    ids, seg, pos = _place(flat, offsets, examples, rows, num_rows, length, segments)
    out[key], out[f"{key}_segmentation"], out[f"{key}_position"] = ids, seg, pos
  return out


def first_fit_decreasing(src_len: np.ndarray, tgt_len: np.ndarray, indices: np.ndarray,
                         length: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Packs examples into rows of `length` tokens on both sides: longest first, each into the
  first row where both its source and its target fit, else into a new row.

  "Longest first" orders by the longer side, then the target, then the source, all decreasing
  (ties keep the order of `indices`). Returns (order, row, num_rows): the examples in the order
  they were placed and the row each went to, rows numbered as they were opened.

  Examples of the same (source, target) lengths are consecutive in that order, and first fit
  places a run of m of them as one step: each row, in order, takes as many as still fit, and the
  rest open new rows. That is the same packing as one example at a time, at numpy speed (a
  16,384-example window of Multi30k-length pairs is ~500 runs).
  """
  indices = np.asarray(indices, np.int64)
  s_all, t_all = src_len[indices].astype(np.int64), tgt_len[indices].astype(np.int64)
  key = np.lexsort((-s_all, -t_all, -np.maximum(s_all, t_all)))
  order, s_all, t_all = indices[key], s_all[key], t_all[key]
  count = len(order)
  row = np.empty(count, np.int64)
  free_s = np.empty(count, np.int64)
  free_t = np.empty(count, np.int64)
  if count == 0:
    return order, row, 0
  starts = np.flatnonzero(np.r_[True, (s_all[1:] != s_all[:-1]) | (t_all[1:] != t_all[:-1])])
  ends = np.r_[starts[1:], count]
  min_s, min_t = int(s_all.min()), int(t_all.min())
  n = lo = 0      # rows opened; rows before `lo` cannot take even the shortest example
  for a, b in zip(starts.tolist(), ends.tolist()):
    ls, lt, left = max(int(s_all[a]), 1), max(int(t_all[a]), 1), b - a
    if n > lo:
      fits = np.minimum(free_s[lo:n] // ls, free_t[lo:n] // lt)
      take = np.minimum(np.maximum(left - (np.cumsum(fits) - fits), 0), fits)
      taking = np.flatnonzero(take)
      if len(taking):
        counts = take[taking]
        placed = int(counts.sum())
        row[a:a + placed] = np.repeat(lo + taking, counts)
        free_s[lo + taking] -= counts * ls
        free_t[lo + taking] -= counts * lt
        a, left = a + placed, left - placed
    if left:
      per_row = min(length // ls, length // lt)
      opened = -(-left // per_row)
      row[a:b] = n + np.arange(left) // per_row
      counts = np.full(opened, per_row)
      counts[-1] = left - per_row * (opened - 1)
      free_s[n:n + opened] = length - counts * ls
      free_t[n:n + opened] = length - counts * lt
      n += opened
    while lo < n and (free_s[lo] < min_s or free_t[lo] < min_t):
      lo += 1
  return order, row, n


# ---------------------------------------------------------------------------------------------
# Plans: (epoch, window) -> list of batch specs; spec -> batch.


def _rng(seed: int, *keys: int) -> np.random.Generator:
  return np.random.default_rng([int(seed) & 0xFFFFFFFF, *keys])


class Plan:
  """A training epoch as windows of batches; every batch a function of (seed, epoch, window, i)."""

  kind = ""

  def __init__(self, ex: Examples, seed: int):
    if len(ex) == 0:
      raise ValueError("No training examples are left after filtering: check the data, "
                       "config.max_length and config.overlong.")
    self.ex, self.seed = ex, int(seed)
    self._perm_cache: tuple[int, np.ndarray] | None = None

  def permutation(self, epoch: int) -> np.ndarray:
    if self._perm_cache is None or self._perm_cache[0] != epoch:
      self._perm_cache = (epoch, _rng(self.seed, epoch, 1).permutation(len(self.ex)))
    return self._perm_cache[1]

  def num_windows(self, epoch: int) -> int:
    raise NotImplementedError

  def window(self, epoch: int, w: int) -> list[Any]:
    raise NotImplementedError

  def build(self, spec: Any) -> dict[str, np.ndarray]:
    raise NotImplementedError


class PaddedPlan(Plan):
  """`rows` shuffled examples per batch, padded to `length`."""

  kind = "padded"
  BATCHES_PER_WINDOW = 64

  def __init__(self, ex, seed, *, rows: int, length: int):
    super().__init__(ex, seed)
    self.rows, self.length = rows, length
    self._window_size = rows * self.BATCHES_PER_WINDOW

  def num_windows(self, epoch):
    return -(-len(self.ex) // self._window_size)

  def window(self, epoch, w):
    idx = self.permutation(epoch)[w * self._window_size:(w + 1) * self._window_size]
    batches = []
    for start in range(0, len(idx), self.rows):
      chunk = idx[start:start + self.rows]
      batches.append(np.pad(chunk, (0, self.rows - len(chunk)), constant_values=-1))
    return batches

  def build(self, spec):
    return pad_batch(self.ex, spec, self.length)


class TokenBudgetPlan(Plan):
  """Length-bucketed batches under a token budget, planned over the whole split (all hosts)."""

  kind = "tokens"

  def __init__(self, ex, seed, *, buckets: Sequence[int], global_rows: dict[int, int],
               process_index: int, process_count: int):
    super().__init__(ex, seed)
    self.buckets = np.asarray(sorted(buckets))
    self.global_rows = global_rows
    self.process_index, self.process_count = process_index, process_count
    longest = np.maximum(ex.src_len, ex.tgt_len)
    if longest.max() > self.buckets[-1]:
      raise ValueError(f"An example of {longest.max()} tokens exceeds the largest length bucket "
                       f"{self.buckets[-1]}.")
    self.bucket_of = np.searchsorted(self.buckets, longest, side="left")
    self._cache: tuple[int, list] | None = None

  def num_windows(self, epoch):
    return 1

  def window(self, epoch, w):
    if self._cache is not None and self._cache[0] == epoch:
      return self._cache[1]
    perm = self.permutation(epoch)
    grouped = perm[np.argsort(self.bucket_of[perm], kind="stable")]
    bounds = np.searchsorted(self.bucket_of[grouped], np.arange(len(self.buckets) + 1))
    batches = []
    for b, length in enumerate(self.buckets.tolist()):
      members = grouped[bounds[b]:bounds[b + 1]]
      rows = self.global_rows[length]
      local = rows // self.process_count
      for start in range(0, len(members), rows):
        chunk = members[start:start + rows]
        chunk = np.pad(chunk, (0, rows - len(chunk)), constant_values=-1)
        mine = chunk[self.process_index * local:(self.process_index + 1) * local]
        batches.append((length, mine))
    order = _rng(self.seed, epoch, 2).permutation(len(batches))
    batches = [batches[i] for i in order]
    self._cache = (epoch, batches)
    return batches

  def build(self, spec):
    length, indices = spec
    return pad_batch(self.ex, indices, length)


class PackedPlan(Plan):
  """Windows of shuffled examples packed first-fit decreasing into rows, rows shuffled."""

  kind = "packed"

  def __init__(self, ex, seed, *, rows: int, length: int, window_size: int):
    super().__init__(ex, seed)
    self.rows, self.length = rows, length
    self._window_size = max(int(window_size), 4 * rows)
    longest = max(int(ex.src_len.max()), int(ex.tgt_len.max()))
    if longest > length:
      raise ValueError(f"An example of {longest} tokens does not fit a packed row of {length}.")
    self._cache: tuple[tuple[int, int], list] | None = None

  def num_windows(self, epoch):
    return -(-len(self.ex) // self._window_size)

  def window(self, epoch, w):
    if self._cache is not None and self._cache[0] == (epoch, w):
      return self._cache[1]
    idx = self.permutation(epoch)[w * self._window_size:(w + 1) * self._window_size]
    order, row, num_rows = first_fit_decreasing(self.ex.src_len, self.ex.tgt_len, idx,
                                                self.length)
    # Rows in a seeded random order; a batch is `self.rows` consecutive rows of that order.
    rank = np.empty(num_rows, np.int64)
    rank[_rng(self.seed, epoch, 3, w).permutation(num_rows)] = np.arange(num_rows)
    row = rank[row]
    grouped = np.argsort(row, kind="stable")
    order, row = order[grouped], row[grouped]
    bounds = np.searchsorted(row, np.arange(0, num_rows + self.rows, self.rows))
    batches = [(order[lo:hi], row[lo:hi] - k * self.rows)
               for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])) if hi > lo]
    self._cache = ((epoch, w), batches)
    return batches

  def build(self, spec):
    examples, rows = spec
    return pack_batch(self.ex, examples, rows, self.rows, self.length)


# ---------------------------------------------------------------------------------------------
# The grain iterator over a plan.


class PlanIterDataset(grain.IterDataset):
  """An endless grain IterDataset of the batches of `plan`, epoch after epoch."""

  def __init__(self, plan: Plan):
    super().__init__()
    self._plan = plan

  def __iter__(self) -> "PlanDatasetIterator":
    return PlanDatasetIterator(self._plan)

  def __str__(self) -> str:
    return f"PlanIterDataset(batching={self._plan.kind})"


class PlanDatasetIterator(grain.DatasetIterator):
  """State: {"batching", "epoch", "window", "batch"}: the position of the next batch."""

  def __init__(self, plan: Plan):
    super().__init__()
    self._plan = plan
    self._epoch = self._window = self._batch = 0
    self._specs: list | None = None

  def __next__(self) -> dict[str, np.ndarray]:
    while True:
      if self._specs is None:
        self._specs = self._plan.window(self._epoch, self._window)
      if self._batch < len(self._specs):
        break
      self._specs, self._batch = None, 0
      self._window += 1
      if self._window >= self._plan.num_windows(self._epoch):
        self._epoch, self._window = self._epoch + 1, 0
        logging.info("Input pipeline: epoch %d begins.", self._epoch)
    spec = self._specs[self._batch]
    self._batch += 1
    return self._plan.build(spec)

  def get_state(self) -> dict[str, Any]:
    return {"batching": self._plan.kind, "epoch": self._epoch, "window": self._window,
            "batch": self._batch}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("batching") != self._plan.kind:
      raise ValueError(f"The saved input-pipeline state is for batching="
                       f"{state.get('batching')!r}, this run uses {self._plan.kind!r}; restore "
                       f"with the config the checkpoint was written with.")
    self._epoch, self._window, self._batch = (int(state["epoch"]), int(state["window"]),
                                              int(state["batch"]))
    self._specs = None


def default_buckets(max_length: int) -> list[int]:
  """8, 16, 24, 32, 48, 64, 96, 128, 192, 256, ... below max_length, then max_length itself."""
  candidates = [8, 16, 24] + [c for k in range(5, 20) for c in (2 ** k, 3 * 2 ** (k - 1))]
  return [c for c in candidates if c < max_length] + [max_length]
