"""The language model's data: one text, a vocabulary, random training windows, validation windows.

The model use is nanoGPT's shakespeare_char: one plain-text file, the first 90% of its characters
for training and the last 10% for validation (`config.validation_fraction`), a character
vocabulary (or SentencePiece), and training batches of contiguous windows at random offsets.

```python
tok = get_lm_tokenizer(config, workdir, process_index=jax.process_index())
it = make_lm_train_iterator(config, tok, process_index=jax.process_index(),
                            process_count=jax.process_count(),
                            row_multiple=jax.local_device_count())
batch = next(it)          # {"inputs", "targets"}: int32 [rows, config.max_length], host-local
state = it.get_state()    # or grain.checkpoint.CheckpointSave(it) beside the model in Orbax
batches = make_lm_eval_batches(config, tok, num_batches=config.num_eval_batches, ...)
text = decode_lm(tok, ids)
```

`config.dataset`:
  * "text_file": `config.text_file`, or `config.data_dir`/input.txt (nanoGPT's layout).
  * "tfds":      the `config.tfds_text_key` feature of every example of `config.tfds_name`
                 [`config.tfds_split`], joined with newlines, read through `tfds.data_source`
                 (ArrayRecord, no TensorFlow; prepare it first as docs/data.md says).

The whole text is held in memory, so this is meant for corpora of up to a few hundred MB. Every
problem with the input raises a one-line `DataError` naming the config key, its value and the fix.
"""

from __future__ import annotations

import os
import sys
import time

import grain
import numpy as np
from absl import logging

from transformer.config import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from transformer.data import tokenizer as tokenizer_lib
from transformer.data.pipeline import _local_rows
from transformer.data.sources import DataError, shard_range
from transformer.data.tokenizer import (
    CHARACTERS_FILENAME,
    TOKENIZER_FILENAME,
    CharacterTokenizer,
    Tokenizer,
)

LM_DATASETS = ("text_file", "tfds")
LM_TOKENIZERS = ("characters", "sentencepiece")
INPUT_FILENAME = "input.txt"          # nanoGPT's data/shakespeare_char/input.txt
LmTokenizer = Tokenizer | CharacterTokenizer
_VOCABULARY_FILES = {"characters": CHARACTERS_FILENAME, "sentencepiece": TOKENIZER_FILENAME}
_LOADERS = {"characters": CharacterTokenizer.load, "sentencepiece": Tokenizer.load}


# ---------------------------------------------------------------------------------------------
# The text.


def _read_text_file(path: str, key: str, value: str) -> str:
  """The UTF-8 text of `path` (a leading BOM dropped); `key`/`value` name it in errors."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"config.{key}={value!r}: {path} is not UTF-8 text ({e.reason} at byte "
                    f"{e.start}); convert it, e.g. `iconv -f latin1 -t utf-8`.") from e
  return text[1:] if text.startswith("\ufeff") else text


def _text_file_path(config) -> tuple[str, str, str]:
  """(path, config key, value) of the text file; DataError when it is not there."""
  text_file = config.get("text_file", "") or ""
  if text_file:
    if not os.path.isfile(text_file):
      raise DataError(f"config.text_file={text_file!r} is not a file; set it to a UTF-8 text "
                      f"file, or leave it empty to read config.data_dir/{INPUT_FILENAME}.")
    return text_file, "text_file", text_file
  data_dir = config.get("data_dir", "") or ""
  if not data_dir:
    raise DataError(f"config.data_dir='' and config.text_file='': set config.data_dir to a "
                    f"directory holding {INPUT_FILENAME} (nanoGPT's layout) or config.text_file "
                    f"to a text file.")
  if not os.path.isdir(data_dir):
    raise DataError(f"config.data_dir={data_dir!r} is not a directory; set it to a directory "
                    f"holding {INPUT_FILENAME}, or set config.text_file.")
  path = os.path.join(data_dir, INPUT_FILENAME)
  if not os.path.isfile(path):
    present = ", ".join(sorted(os.listdir(data_dir))[:10]) or "nothing"
    raise DataError(f"config.data_dir={data_dir!r}: no {INPUT_FILENAME} there (it holds "
                    f"{present}); put the text in {path} or set config.text_file to the file.")
  return path, "data_dir", data_dir


def _as_text(value) -> str:
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_tfds_text(config) -> tuple[str, str, str]:
  """The joined texts of a tfds split, read without TensorFlow; (text, config key, value)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, split = config.tfds_name, config.tfds_split
  data_dir, key = config.get("tfds_data_dir", "") or None, config.tfds_text_key
  if not name:
    raise DataError("config.tfds_name='' with config.dataset='tfds': set it to a tfds text "
                    "dataset, e.g. 'tiny_shakespeare'.")
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    num_examples = len(source)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(f"config.tfds_name={name!r} is not a tfds dataset; use a registered name "
                    f"such as 'tiny_shakespeare'.") from e
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"config.tfds_name={name!r}, config.tfds_split={split!r}: cannot read it "
                    f"({first}); prepare it once with `tfds build {name} "
                    f"--file_format=array_record` (see docs/data.md) and check the split name "
                    f"and config.tfds_data_dir={data_dir or ''!r}.") from e
  texts = []
  for i in range(num_examples):
    example = source[i]
    if key not in example:
      raise DataError(f"config.tfds_text_key={key!r} is not a feature of {name!r} (it has "
                      f"{', '.join(sorted(example))}); set it to the text feature.")
    texts.append(_as_text(example[key]))
  return "\n".join(texts), "tfds_name", f"{name}[{split}]"


def load_text(config) -> str:
  """The whole corpus as one string (config.dataset "text_file" or "tfds")."""
  if config.dataset == "text_file":
    path, key, value = _text_file_path(config)
    text = _read_text_file(path, key, value)
  elif config.dataset == "tfds":
    text, key, value = _load_tfds_text(config)
  else:
    raise DataError(f"config.dataset={config.dataset!r} is unknown for the language model; "
                    f"allowed: {', '.join(LM_DATASETS)}.")
  if not text.strip():
    raise DataError(f"config.{key}={value!r}: the text is empty; point it at a non-empty text.")
  return text


def split_text(text: str, validation_fraction: float) -> tuple[str, str]:
  """nanoGPT's split by characters: train = text[:int(n * (1 - f))], validation = the rest."""
  if not 0 <= validation_fraction < 1:
    raise DataError(f"config.validation_fraction={validation_fraction} must be in [0, 1), "
                    f"e.g. 0.1 (nanoGPT's last 10%).")
  cut = int(len(text) * (1 - validation_fraction))
  return text[:cut], text[cut:]


# ---------------------------------------------------------------------------------------------
# The vocabulary and token ids.


def _build_tokenizer(config, train_text: str) -> LmTokenizer:
  """A new vocabulary from the training text only."""
  if config.tokenizer == "characters":
    tok = CharacterTokenizer.from_text(train_text)
    logging.info("Character vocabulary of the train text: %d characters + 4 special ids "
                 "(config.vocab_size=%s is not used).", len(tok.characters), config.vocab_size)
    return tok
  # Identical on every host given the seed; hosts waiting for process 0's file is future work.
  return tokenizer_lib.train_tokenizer(train_text.split("\n"), vocab_size=config.vocab_size,
                                       model_type=config.tokenizer_model, seed=config.seed)


def get_lm_tokenizer(config, workdir: str, *, process_index: int = 0) -> LmTokenizer:
  """The workdir's saved vocabulary, or a new one built from the train text and saved there.

  config.tokenizer "characters" -> WORKDIR/characters.json, "sentencepiece" -> WORKDIR/
  tokenizer.model (config.vocab_size, config.tokenizer_model). Only `process_index` 0 writes.
  """
  if config.tokenizer not in LM_TOKENIZERS:
    raise DataError(f"config.tokenizer={config.tokenizer!r} is unknown; allowed: "
                    f"{', '.join(LM_TOKENIZERS)}.")
  path = os.path.join(workdir, _VOCABULARY_FILES[config.tokenizer])
  if os.path.exists(path):
    tok = _LOADERS[config.tokenizer](path)
    logging.info("Loaded tokenizer %s (vocabulary %d).", path, tok.vocab_size)
    return tok
  for kind, name in _VOCABULARY_FILES.items():
    if kind != config.tokenizer and os.path.exists(os.path.join(workdir, name)):
      raise DataError(f"config.tokenizer={config.tokenizer!r}, but workdir {workdir} holds "
                      f"{name} ({kind}) from an earlier run; set config.tokenizer={kind!r} or "
                      f"use a new workdir.")
  train_text, _ = split_text(load_text(config), config.validation_fraction)
  tok = _build_tokenizer(config, train_text)
  if process_index == 0:
    tokenizer_lib.save_tokenizer(tok, path)
    logging.info("Saved tokenizer %s (vocabulary %d).", path, tok.vocab_size)
  return tok


def encode_text(tok: LmTokenizer, text: str) -> np.ndarray:
  """[tokens] int32 ids of the whole text. SentencePiece encodes line by line and puts EOS_ID
  where the newlines were; characters keep "\\n" as an ordinary character."""
  if isinstance(tok, CharacterTokenizer):
    return tok.encode_array(text)
  lines = tok.encode_batch(text.split("\n"))
  lengths = np.fromiter((len(line) + 1 for line in lines), np.int64, count=len(lines))
  ids = np.full(int(lengths.sum()) - 1, EOS_ID, np.int32)     # no EOS after the last line
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  for start, line in zip(starts.tolist(), lines):
    ids[start:start + len(line)] = line
  return ids


def decode_lm(tok: LmTokenizer, ids) -> str:
  """The inverse of `encode_text`: PAD and BOS skipped; for SentencePiece, EOS -> "\\n"."""
  if isinstance(tok, CharacterTokenizer):
    return tok.decode(ids)
  ids = np.asarray(ids).reshape(-1)
  ids = ids[(ids != PAD_ID) & (ids != BOS_ID)]
  lines = np.split(ids, np.flatnonzero(ids == EOS_ID))
  return "\n".join(tok.decode(line[1:] if i else line) for i, line in enumerate(lines))


def lm_split_ids(config, tok: LmTokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(train ids, validation ids), int32, of the config's text split as nanoGPT does."""
  start = time.time()
  train_text, validation_text = split_text(load_text(config), config.validation_fraction)
  train_ids, validation_ids = encode_text(tok, train_text), encode_text(tok, validation_text)
  logging.info("Language-model text: %d train characters -> %d tokens (%d unknown), %d "
               "validation characters -> %d tokens (%d unknown), in %.2f s.", len(train_text),
               len(train_ids), int(np.sum(train_ids == UNK_ID)), len(validation_text),
               len(validation_ids), int(np.sum(validation_ids == UNK_ID)), time.time() - start)
  return train_ids, validation_ids


# ---------------------------------------------------------------------------------------------
# Training: endless random windows, as nanoGPT's get_batch.


def _window_rng(seed: int, batch_index: int, process_index: int) -> np.random.Generator:
  return np.random.default_rng([int(seed) & 0xFFFFFFFF, 17, int(batch_index), int(process_index)])


class WindowBatch(grain.transforms.Map):
  """Batch index -> `rows` windows of `length + 1` train tokens at random offsets.

  The offsets are uniform over [0, len(ids) - length - 1] (with replacement) and a pure function
  of (seed, batch index, process index), so a restored iterator continues exactly.
  """

  def __init__(self, ids: np.ndarray, *, rows: int, length: int, seed: int, process_index: int):
    self.ids, self.rows, self.length = ids, rows, length
    self.seed, self.process_index = seed, process_index
    self._span = np.arange(length + 1)

  def map(self, batch_index: int) -> dict[str, np.ndarray]:
    rng = _window_rng(self.seed, batch_index, self.process_index)
    offsets = rng.integers(0, len(self.ids) - self.length, size=self.rows)
    windows = self.ids[offsets[:, None] + self._span]          # [rows, length + 1]
    return {"inputs": np.ascontiguousarray(windows[:, :-1]),
            "targets": np.ascontiguousarray(windows[:, 1:])}


def make_lm_train_iterator(config, tok: LmTokenizer, *, process_index: int = 0,
                           process_count: int = 1, row_multiple: int = 1,
                           split_ids: tuple[np.ndarray, np.ndarray] | None = None):
  """An endless, checkpointable grain DatasetIterator of host-local training batches.

  Each batch is {"inputs", "targets"}: int32 [config.batch_size // process_count (a multiple of
  row_multiple), config.max_length]; every row a window of max_length + 1 consecutive train
  tokens, inputs its first max_length and targets its last. The state is the next batch index.
  `split_ids`: `lm_split_ids(config, tok)` when the caller has it already (else read here).
  """
  train_ids, _ = split_ids if split_ids is not None else lm_split_ids(config, tok)
  length = int(config.max_length)
  if len(train_ids) < length + 2:
    raise DataError(f"config.max_length={length} needs at least {length + 2} train tokens, the "
                    f"train text has {len(train_ids)}; lower config.max_length or use more "
                    f"text.")
  rows = _local_rows(config.batch_size, process_count, row_multiple, "batch_size")
  windows = WindowBatch(train_ids, rows=rows, length=length, seed=config.seed,
                        process_index=process_index)
  ds = grain.MapDataset.range(sys.maxsize).map(windows).to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if config.prefetch > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=config.prefetch)
  logging.info("Language-model training windows: %d rows x %d tokens per batch on host %d of "
               "%d, offsets in [0, %d].", rows, length, process_index, process_count,
               len(train_ids) - length - 1)
  return iter(ds)


# ---------------------------------------------------------------------------------------------
# Evaluation: the whole validation text in consecutive windows.


def _eval_windows(ids: np.ndarray, length: int, first: int, count: int) -> dict[str, np.ndarray]:
  """Windows first .. first + count - 1 of `ids`, PAD after the text's end: [count, length]."""
  inputs = np.full((count, length), PAD_ID, np.int32)
  targets = np.full((count, length), PAD_ID, np.int32)
  for r in range(count):
    start = (first + r) * length
    window = ids[start:start + length + 1]
    inputs[r, :len(window) - 1] = window[:-1]
    targets[r, :len(window) - 1] = window[1:]
  return {"inputs": inputs, "targets": targets}


def make_lm_eval_batches(config, tok: LmTokenizer, *, num_batches: int = 0,
                         row_multiple: int = 1, process_index: int = 0, process_count: int = 1,
                         split_ids: tuple[np.ndarray, np.ndarray] | None = None
                         ) -> list[dict[str, np.ndarray]]:
  """The validation text as consecutive windows, each validation token but the first a target
  exactly once: window k is ids[k * L : k * L + L + 1] (L = config.max_length), the last one
  padded with PAD (weight 0 in the loss).

  Each host takes a contiguous shard of the windows, config.eval_batch_size // process_count
  rows per batch (a multiple of row_multiple); all hosts return the same number of batches of
  the same shapes (all-PAD rows fill the gaps; the last batch has only the rows the longest
  shard needs). `num_batches > 0` keeps only the first that many batches. `split_ids`: as for
  make_lm_train_iterator.
  """
  _, ids = split_ids if split_ids is not None else lm_split_ids(config, tok)
  length = int(config.max_length)
  if len(ids) < 2:
    raise DataError(f"config.validation_fraction={config.validation_fraction} leaves "
                    f"{len(ids)} validation tokens, too few to evaluate; raise it (e.g. 0.1).")
  num_windows = -(-(len(ids) - 1) // length)
  mine = shard_range(num_windows, process_index, process_count)
  rows = _local_rows(config.eval_batch_size, process_count, row_multiple, "eval_batch_size")
  longest_shard = -(-num_windows // process_count)
  total = -(-longest_shard // rows)
  if num_batches > 0:
    total = min(total, num_batches)
  out = []
  for b in range(total):
    width = rows
    if b == total - 1:    # the last batch: as many rows as the longest shard needs
      width = -(-(min(longest_shard, total * rows) - b * rows) // row_multiple) * row_multiple
    first = mine.start + b * rows
    count = max(0, min(width, mine.stop - first))
    batch = _eval_windows(ids, length, first, count)
    out.append({k: np.pad(v, ((0, width - count), (0, 0)), constant_values=PAD_ID)
                for k, v in batch.items()})
  logging.info("Language-model eval batches: %d batches of up to %d rows x %d tokens; windows "
               "%d..%d of %d on host %d (%d validation tokens).", len(out), rows, length,
               mine.start, mine.stop - 1, num_windows, process_index, len(ids))
  return out
