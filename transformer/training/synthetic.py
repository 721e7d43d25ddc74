"""Random batches in the pipeline's batch format, for benchmarks, smoke runs and tests.

A copy task (targets = inputs) with random lengths, so a model can learn it and padding is
exercised. Batch `i` of the global stream depends only on (seed, i); each host takes its own
rows, so any number of hosts reads the same global batches. The iterator is a grain
DatasetIterator, checkpointable like the real pipeline's.
"""

from __future__ import annotations

import time

import grain
import numpy as np

from transformer.config import EOS_ID, PAD_ID

FIRST_TOKEN = 4  # ids below are special (PAD, EOS, BOS, UNK)


def make_batch(index: int, *, rows: int, length: int, vocab_size: int, seed: int,
               full: bool = False) -> dict:
  """Global batch number `index`: {'inputs', 'targets'} int32 [rows, length]."""
  rng = np.random.default_rng([seed, index])
  tokens = rng.integers(FIRST_TOKEN, vocab_size, size=(rows, length), dtype=np.int32)
  if full:
    lengths = np.full((rows,), length)
  else:
    lengths = rng.integers(2, length + 1, size=(rows,))
  positions = np.arange(length)[None, :]
  tokens = np.where(positions < lengths[:, None] - 1, tokens, PAD_ID)
  tokens = np.where(positions == lengths[:, None] - 1, EOS_ID, tokens).astype(np.int32)
  return {"inputs": tokens, "targets": tokens.copy()}


def make_train_iterator(*, rows: int, length: int, vocab_size: int, seed: int = 0,
                        process_index: int = 0, process_count: int = 1, full: bool = False,
                        delay: float = 0.0):
  """An endless checkpointable iterator of this host's rows of the global batches.

  `delay` seconds of sleep per batch simulate a slow input (tests kill runs mid-way with it).
  """
  if rows % process_count:
    raise ValueError(f"rows={rows} cannot be split over {process_count} hosts.")
  local = rows // process_count

  def host_rows(index):
    if delay:
      time.sleep(delay)
    batch = make_batch(int(index), rows=rows, length=length, vocab_size=vocab_size, seed=seed,
                       full=full)
    return {k: v[process_index * local:(process_index + 1) * local] for k, v in batch.items()}

  dataset = grain.MapDataset.range(0, 2**31 - 1).map(host_rows).to_iter_dataset()
  return iter(dataset)


def make_eval_batches(*, num_batches: int, rows: int, length: int, vocab_size: int,
                      seed: int = 1234, process_index: int = 0, process_count: int = 1):
  """A fixed list of this host's rows of `num_batches` batches."""
  it = make_train_iterator(rows=rows, length=length, vocab_size=vocab_size, seed=seed,
                           process_index=process_index, process_count=process_count)
  return [next(it) for _ in range(num_batches)]
