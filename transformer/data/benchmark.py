r"""Input-pipeline figures: non-pad fraction per batching mode and throughput in tokens/s.

  python -m transformer.data.benchmark --config=configs/default.py \
      --config.dataset=text --config.data_dir=../shared/data/multi30k

For each of "padded", "tokens" and "packed" it builds the training iterator, reads one epoch
(or --max_batches), and prints the share of non-pad tokens among all token slots of inputs and
targets, the number of distinct batch shapes, and the pipeline's speed: non-pad tokens
(source + target) delivered per second by the prefetching iterator, after one warm-up batch.
"Padded (to longest)" is what padding each padded batch only to its longest pair would give.
"setup s" is from building the iterator to its first batch: reading and tokenizing the split, or
with `--cache` (the default) reading WORKDIR/encoded when an earlier run with the same --workdir
wrote it. Peak memory (max RSS) is printed at the end.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

from transformer.cli import fail
from transformer.data import pipeline
from transformer.data.encoded_cache import ENCODED_DIR

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Where the tokenizer is kept ('' = a temp dir).")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", 2000, "At most this many batches per mode.")
_MODES = flags.DEFINE_list("modes", "padded,tokens,packed", "Batching modes to measure.")
_CACHE = flags.DEFINE_bool(
    "cache", True, "Read and write the encoded split in WORKDIR/encoded, as train.py does: the "
    "first run with a --workdir encodes, later runs read the cache.")


def measure(config, tok, mode: str, max_batches: int, cache_dir: str | None = None) -> dict:
  config = config.copy_and_resolve_references()
  config.batching = mode
  start = time.perf_counter()
  it = pipeline.make_train_iterator(config, tok, cache_dir=cache_dir)
  first = next(it)
  setup = time.perf_counter() - start
  nonpad = cells = nonpad_longest_cells = 0
  shapes = set()
  batches = 0
  tic = time.perf_counter()
  batch = first
  while True:
    for key in ("inputs", "targets"):
      x = batch[key]
      nonpad += int((x != 0).sum())
      cells += x.size
      longest = int((x != 0).sum(axis=1).max())
      nonpad_longest_cells += x.shape[0] * longest
    shapes.add(batch["inputs"].shape)
    batches += 1
    if batches >= max_batches:
      break
    batch = next(it)
    if it.get_state().get("epoch", 0) >= 1:   # one epoch measured
      break
  elapsed = time.perf_counter() - tic
  it.close()
  return dict(mode=mode, setup_s=setup, batches=batches, nonpad=nonpad / cells,
              nonpad_if_longest=nonpad / nonpad_longest_cells, shapes=sorted(shapes),
              tokens_per_s=nonpad / elapsed, batches_per_s=batches / elapsed)


def main(argv):
  try:
    _main(argv)
  except ValueError as e:  # a config or data error (DataError): one line, as train.py does
    fail(str(e))


def _main(argv):
  del argv
  config = _CONFIG.value
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="data_benchmark_")
  start = time.perf_counter()
  tok = pipeline.get_tokenizer(config, workdir)
  print(f"dataset={config.dataset} data_dir={config.data_dir or '-'} tfds={config.tfds_name or '-'}"
        f" vocab={tok.vocab_size} max_length={config.max_length} batch_size={config.batch_size}"
        f" tokens_per_batch={config.tokens_per_batch} tokenizer {time.perf_counter() - start:.1f}s"
        f" ({os.path.join(workdir, 'tokenizer.model')})")
  print(f"{'batching':<10}{'non-pad':>9}{'batches':>9}{'shapes':>8}{'setup s':>9}"
        f"{'tokens/s':>12}{'batches/s':>11}")
  for mode in _MODES.value:
    cache_dir = os.path.join(workdir, ENCODED_DIR) if _CACHE.value else None
    r = measure(config, tok, mode, _MAX_BATCHES.value, cache_dir)
    print(f"{mode:<10}{r['nonpad']:>9.1%}{r['batches']:>9}{len(r['shapes']):>8}"
          f"{r['setup_s']:>9.2f}{r['tokens_per_s']:>12,.0f}{r['batches_per_s']:>11.1f}")
    if mode == "padded":
      print(f"{'  (padded to the longest pair of each batch instead: '}"
            f"{r['nonpad_if_longest']:.1%} non-pad, one shape per length)")
    logging.info("%s shapes: %s", mode, r["shapes"])
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"peak memory (max RSS) {peak:.2f} GiB; total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  app.run(main)
