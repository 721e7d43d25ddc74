"""Tokenizing a large split on every core: one contiguous part of the pairs per process.

`Tokenizer.encode_flat` spends most of a large split's time in Python, looking each word up in
its cache (one core, whatever SentencePiece's threads do), so a split of at least
`MIN_PAIRS_PER_PROCESS` pairs per core is cut into one part per usable core: this process
encodes the first, forked children the others, and the parts' ids are joined in order, so the
result is one process's, id for id. The children are forked (they inherit the tokenizer and the
texts instead of receiving copies) and only ever run SentencePiece and numpy, never JAX, whose
warning about forking a multithreaded process is therefore silenced here. Where the platform
cannot fork, or a child fails, the part is encoded in this process instead (with a warning for
a failure).
"""

from __future__ import annotations

import multiprocessing
import traceback
import warnings
from typing import NamedTuple, Sequence

import numpy as np
from absl import logging

from transformer.cpu_devices import usable_cores

MIN_PAIRS_PER_PROCESS = 50_000
CHUNK = 65536  # texts per encode_flat call, so that only one chunk's ids are ever Python lists


def encode_pairs(tok, pairs: Sequence[tuple[str, str]], *, keep_empty: bool = False,
                 processes: int | None = None,
                 min_pairs_per_process: int = MIN_PAIRS_PER_PROCESS) -> EncodedPairs:
  """The pairs' sources' and targets' ids (each side: all ids end to end [total] int32, each
  text's number of ids [n] int64), leaving out pairs with an empty side unless `keep_empty`; on
  up to `processes` processes (default: the usable cores) of `min_pairs_per_process` pairs or
  more each."""
  processes = usable_cores() if processes is None else processes
  processes = max(1, min(processes, len(pairs) // max(1, min_pairs_per_process)))
  if processes == 1 or "fork" not in multiprocessing.get_all_start_methods():
    return _encode_part(tok, pairs, keep_empty)
  bounds = np.linspace(0, len(pairs), processes + 1).astype(int).tolist()
  context = multiprocessing.get_context("fork")
  children = []
  for begin, end in zip(bounds[1:-1], bounds[2:]):
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_encode_to_pipe,
                            args=(tok, pairs, begin, end, keep_empty, writer), daemon=True)
    with warnings.catch_warnings():  # JAX's warning on fork: the child never runs JAX
      warnings.filterwarnings("ignore", message=r".*fork", category=RuntimeWarning)
      warnings.filterwarnings("ignore", message=r".*fork", category=DeprecationWarning)
      child.start()
    writer.close()
    children.append((child, reader, begin, end))
  parts = [_encode_part(tok, pairs[:bounds[1]], keep_empty)]
  for child, reader, begin, end in children:
    parts.append(_receive(child, reader) or _encode_part(tok, pairs[begin:end], keep_empty))
  return EncodedPairs(*(np.concatenate([getattr(part, name) for part in parts])
                        for name in ("src", "src_len", "tgt", "tgt_len")),
                      num_empty=sum(part.num_empty for part in parts))


class EncodedPairs(NamedTuple):
  src: np.ndarray
  src_len: np.ndarray
  tgt: np.ndarray
  tgt_len: np.ndarray
  num_empty: int


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


def _encode_to_pipe(tok, pairs, begin: int, end: int, keep_empty: bool, writer) -> None:
  """The child's work: its part's ids, or the error's traceback, sent to the parent."""
  try:
    writer.send(("ids", _encode_part(tok, pairs[begin:end], keep_empty)))
  except Exception:  # pylint: disable=broad-except
    writer.send(("error", traceback.format_exc()))
  finally:
    writer.close()


def _receive(child, reader) -> EncodedPairs | None:
  try:
    kind, payload = reader.recv()
  except (EOFError, OSError):
    kind, payload = "error", "the worker process ended without an answer"
  reader.close()
  child.join()
  if kind == "ids":
    return payload
  logging.warning("Tokenizing in a worker process failed (%s); encoding its part here instead.",
                  payload.strip().splitlines()[-1])
  return None
