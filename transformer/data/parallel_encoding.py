"""Tokenizing a large split on every core: one contiguous part of the pairs per process.

`Tokenizer.encode_flat` spends most of a large split's time in Python, looking each word up in
its cache (one core, whatever SentencePiece's threads do), so a split of at least
`MIN_PAIRS_PER_PROCESS` pairs per usable core is cut into one part per core
(forked_parts.map_parts: this process encodes the first, forked children the others) and the
parts' ids are joined in order: one process's result, id for id.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import numpy as np

from transformer.cpu_devices import usable_cores
from transformer.data import forked_parts

MIN_PAIRS_PER_PROCESS = 50_000
CHUNK = 65536  # texts per encode_flat call, so that only one chunk's ids are ever Python lists


class EncodedPairs(NamedTuple):
  """Each side's ids end to end ([total] int32) and each text's number of ids ([n] int64)."""
  src: np.ndarray
  src_len: np.ndarray
  tgt: np.ndarray
  tgt_len: np.ndarray
  num_empty: int  # pairs left out for an empty side


def encode_pairs(tok, pairs: Sequence[tuple[str, str]], *, keep_empty: bool = False,
                 processes: int | None = None,
                 min_pairs_per_process: int = MIN_PAIRS_PER_PROCESS) -> EncodedPairs:
  """The pairs' ids, leaving out pairs with an empty side unless `keep_empty`; on up to
  `processes` processes (default: the usable cores) of `min_pairs_per_process` pairs or more."""
  parts = forked_parts.map_parts(functools.partial(_encode_part, tok, keep_empty=keep_empty),
                                 pairs, min_items_per_process=min_pairs_per_process,
                                 processes=processes)
  if len(parts) == 1:
    return parts[0]
  return EncodedPairs(*(np.concatenate([getattr(part, name) for part in parts])
                        for name in ("src", "src_len", "tgt", "tgt_len")),
                      num_empty=sum(part.num_empty for part in parts))


def _encode_part(tok, pairs: Sequence[tuple[str, str]], keep_empty: bool) -> EncodedPairs:
  kept = pairs if keep_empty else [p for p in pairs if p[0].strip() and p[1].strip()]
  src, src_len = _encode_chunks(tok, [p[0] for p in kept])
  tgt, tgt_len = _encode_chunks(tok, [p[1] for p in kept])
  return EncodedPairs(src, src_len, tgt, tgt_len, num_empty=len(pairs) - len(kept))


def _encode_chunks(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
  flats, lengths = [], []
  threads = usable_cores()
  for begin in range(0, len(texts), CHUNK):
    flat, n = tok.encode_flat(texts[begin:begin + CHUNK], num_threads=threads)
    flats.append(flat)
    lengths.append(n)
  if not flats:
    return np.zeros(0, np.int32), np.zeros(0, np.int64)
  return np.concatenate(flats), np.concatenate(lengths)
