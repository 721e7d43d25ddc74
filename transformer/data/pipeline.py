"""What the trainer calls: the tokenizer, the training iterator, evaluation batches, raw pairs.

```python
tok = get_tokenizer(config, workdir)
it = make_train_iterator(config, tok, process_index=jax.process_index(),
                         process_count=jax.process_count(), row_multiple=jax.local_device_count())
batch = next(it)            # dict of host-local np.int32 arrays (docs/architecture.md)
state = it.get_state()      # or grain.checkpoint.CheckpointSave(it) beside the model in Orbax
batches = make_eval_batches(config, tok, config.eval_split, num_batches=config.num_eval_batches)
pairs = load_pairs(config, config.test_split)     # raw texts for BLEU
```

`config` is the ConfigDict of configs/default.py; the data keys are documented there and in
docs/data.md. All input errors are raised here, before the first training step.
"""

from __future__ import annotations

import os

import grain
import numpy as np
from absl import logging

from transformer.data import batching, encoded_cache, sources
from transformer.data import tokenizer as tokenizer_lib
from transformer.data.batching import BATCHINGS
from transformer.data.sources import DataError, load_pairs  # noqa: F401 (re-exported)
from transformer.data.tokenizer import TOKENIZER_FILENAME, Tokenizer


def get_tokenizer(config, workdir: str) -> Tokenizer:
  """Loads WORKDIR/tokenizer.model, or trains one on a sample of the train split and saves it."""
  path = os.path.join(workdir, TOKENIZER_FILENAME)
  if os.path.exists(path):
    tok = Tokenizer.load(path)
    logging.info("Loaded tokenizer %s (vocabulary %d).", path, tok.vocab_size)
    return tok
  source = sources.open_source(config, config.train_split)
  num_pairs = min(len(source), max(1, -(-int(config.tokenizer_sample_sentences) // 2)))
  rng = np.random.default_rng([int(config.seed) & 0xFFFFFFFF, 7])
  if num_pairs < len(source):
    indices = np.sort(rng.choice(len(source), size=num_pairs, replace=False))
  else:
    indices = range(len(source))
  pairs = source.get(indices)
  sentences = [s for pair in pairs for s in pair]
  logging.info("Training the tokenizer on %d sentences (%d pairs of %d in %s).", len(sentences),
               num_pairs, len(source), source.name)
  tok = tokenizer_lib.train_tokenizer(sentences, vocab_size=config.vocab_size,
                                      model_type=config.tokenizer_model, seed=config.seed)
  tokenizer_lib.save_tokenizer(tok, path)
  logging.info("Saved tokenizer %s.", path)
  return tok


def _local_rows(global_rows: int, process_count: int, row_multiple: int, what: str) -> int:
  """Rows per host: global // process_count, rounded down to a multiple of row_multiple."""
  if global_rows < 1:
    raise ValueError(f"config.{what}={global_rows} must be positive.")
  if global_rows % process_count:
    logging.warning("config.%s=%d is not divisible by process_count=%d; each host takes %d rows.",
                    what, global_rows, process_count, global_rows // process_count)
  local = global_rows // process_count
  rounded = max(row_multiple, local // row_multiple * row_multiple)
  if rounded != local:
    logging.warning("config.%s=%d gives %d rows per host, not a multiple of row_multiple=%d; "
                    "using %d.", what, global_rows, local, row_multiple, rounded)
  return rounded


def length_buckets(config) -> list[int]:
  """Bucket lengths for "tokens" batching: config.length_buckets or the default ladder."""
  text = str(config.get("length_buckets", "") or "").strip()
  if not text:
    return batching.default_buckets(config.max_length)
  try:
    buckets = sorted({int(b) for b in text.split(",") if b.strip()})
  except ValueError as e:
    raise ValueError(f"config.length_buckets={text!r} must be comma-separated integers, "
                     f"e.g. '16,32,64'.") from e
  if not buckets or buckets[0] < 1:
    raise ValueError(f"config.length_buckets={text!r} must hold positive lengths.")
  if buckets[-1] < config.max_length:
    buckets.append(config.max_length)
  return [b for b in buckets if b <= config.max_length]


TOKEN_BUDGETS = ("real", "padded")


def token_budget_rows(config, buckets, *, process_count: int, row_multiple: int,
                      lengths: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
  """Global rows per bucket, in multiples of process_count * row_multiple.

  config.token_budget = "padded": the most rows of length L within config.tokens_per_batch
  positions. "real" (§5.1's "approximately 25000 source tokens and 25000 target tokens"): rows
  such that the batch holds about config.tokens_per_batch real tokens on its longer side, from
  the mean real length of each bucket's pairs in `lengths` (source, target lengths of the split;
  a bucket with no pairs counts full rows). The shapes stay static, one per bucket.
  """
  unit = process_count * row_multiple
  counting = config.get("token_budget", "padded")
  if counting not in TOKEN_BUDGETS:
    raise ValueError(f"config.token_budget={counting!r} is unknown; allowed: "
                     f"{', '.join(TOKEN_BUDGETS)}.")
  if counting == "real" and lengths is None:
    raise ValueError("token_budget='real' needs the split's lengths.")
  rows = {}
  if counting == "real":
    src_len, tgt_len = lengths
    longest = np.maximum(src_len, tgt_len)
  previous = 0
  for length in buckets:
    if counting == "real":
      members = (longest <= length) & (longest > previous)
      per_row = (max(float(src_len[members].mean()), float(tgt_len[members].mean()))
                 if members.any() else float(length))
      r = int(round(int(config.tokens_per_batch) / per_row / unit)) * unit
    else:
      r = int(config.tokens_per_batch) // length // unit * unit
    previous = length
    if r == 0:
      raise ValueError(
          f"config.tokens_per_batch={config.tokens_per_batch} cannot hold even {unit} rows "
          f"(process_count={process_count} x row_multiple={row_multiple}) of the {length}-token "
          f"bucket; raise it to at least {unit * length} or lower config.max_length.")
    rows[length] = r
  return rows


def _check_config(config) -> None:
  if config.batching not in BATCHINGS:
    raise ValueError(f"config.batching={config.batching!r} is unknown; allowed: "
                     f"{', '.join(BATCHINGS)}.")
  if config.overlong not in batching.OVERLONG:
    raise ValueError(f"config.overlong={config.overlong!r} is unknown; allowed: "
                     f"{', '.join(batching.OVERLONG)}.")


def reads_whole_split(config, process_count: int) -> bool:
  """Whether every host reads (and caches) the whole training split rather than its shard:
  token-budget batching plans over the whole split, and one process has only the whole."""
  return config.batching == "tokens" or process_count == 1


def make_train_iterator(config, tok: Tokenizer, *, process_index: int = 0,
                        process_count: int = 1, row_multiple: int = 1,
                        cache_dir: str | None = None):
  """An endless, checkpointable grain DatasetIterator of host-local training batches.

  "padded" and "packed": config.batch_size global rows, each host reading and shuffling its own
  contiguous shard. "tokens": config.tokens_per_batch global tokens per batch; each host reads the
  whole split to plan the global batches (their shapes must agree across hosts) and keeps its
  slice of every batch's rows. Epochs repeat, each reshuffled from (config.seed, epoch).

  `cache_dir` (WORKDIR/encoded): the tokenized split is read from there when it was encoded
  before with this source and tokenizer, and written there otherwise (encoded_cache.py).
  """
  _check_config(config)
  whole = reads_whole_split(config, process_count)

  def encode() -> batching.Examples:
    source = sources.open_source(config, config.train_split)
    indices = (range(len(source)) if whole else
               sources.shard_range(len(source), process_index, process_count))
    what = (f"train split {source.name} (host {process_index} of {process_count}, "
            f"pairs {indices.start}..{indices.stop - 1})")
    return batching.encode_examples(source.get(indices), tok, max_length=config.max_length,
                                    overlong=config.overlong, what=what)

  part = {"whole": True} if whole else {"process_index": process_index,
                                        "process_count": process_count}
  identity = sources.source_identity(config, config.train_split) if cache_dir else None
  ex = encoded_cache.encoded_examples(cache_dir, identity, part, tok, encode,
                                      max_length=int(config.max_length),
                                      overlong=config.overlong)
  seed = config.seed
  if config.batching == "padded":
    rows = _local_rows(config.batch_size, process_count, row_multiple, "batch_size")
    plan = batching.PaddedPlan(ex, seed, rows=rows, length=config.max_length)
  elif config.batching == "packed":
    rows = _local_rows(config.batch_size, process_count, row_multiple, "batch_size")
    plan = batching.PackedPlan(ex, seed, rows=rows, length=config.max_length,
                               window_size=config.get("pack_window", 16384))
  else:
    buckets = length_buckets(config)
    rows = token_budget_rows(config, buckets, process_count=process_count,
                             row_multiple=row_multiple, lengths=(ex.src_len, ex.tgt_len))
    plan = batching.TokenBudgetPlan(ex, seed, buckets=buckets, global_rows=rows,
                                    process_index=process_index, process_count=process_count)
    logging.info("Token-budget buckets (length: global rows, %s tokens): %s",
                 config.get("token_budget", "padded"), rows)
  ds = batching.PlanIterDataset(plan)
  if config.prefetch > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=config.prefetch)
  return iter(ds)


def make_eval_batches(config, tok: Tokenizer, split: str, *, num_batches: int = 0,
                      row_multiple: int = 1, process_index: int = 0,
                      process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """Padded batches [rows, config.max_length] over a split in file order, each example once.

  Overlong pairs are truncated (never dropped) and empty pairs kept, so the batches hold every
  pair of `load_pairs(config, split)`. Each host takes its contiguous shard; all hosts return
  the same number of batches of the same shapes (all-PAD rows fill the gaps). `num_batches=0`
  covers the whole split, otherwise only the first `num_batches` batches.
  """
  source = sources.open_source(config, split)
  n = len(source)
  mine = sources.shard_range(n, process_index, process_count)
  rows = _local_rows(config.eval_batch_size, process_count, row_multiple, "eval_batch_size")
  longest_shard = -(-n // process_count)
  total = -(-longest_shard // rows)
  if num_batches > 0:
    total = min(total, num_batches)
  take = range(mine.start, min(mine.stop, mine.start + total * rows))
  ex = batching.encode_examples(source.get(take), tok, max_length=config.max_length,
                                overlong="truncate", keep_empty=True,
                                what=f"{split} split {source.name} (host {process_index})")
  out = []
  for b in range(total):
    width = rows
    if b == total - 1:    # the last batch: as many rows as the longest shard needs
      left = min(longest_shard, total * rows) - b * rows
      width = -(-left // row_multiple) * row_multiple
    idx = np.arange(b * rows, b * rows + width)
    idx[idx >= len(ex)] = -1
    out.append(batching.pad_batch(ex, idx, config.max_length))
  logging.info("Eval batches for %s: %d batches of up to %d rows (%d pairs on this host).",
               split, len(out), rows, len(ex))
  return out
