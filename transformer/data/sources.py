"""Where (source, target) text pairs come from: tfds, local parallel text, or the number task.

Every source is opened as a `PairSource`: a length and random access to raw pairs in file
order, so a host reads only the part of a split it needs (its shard, or a tokenizer sample).
All problems with the input (a missing file, misaligned files, text that is not UTF-8, an
unknown tfds name or language pair) raise `DataError` with what is wrong and how to fix it,
when the source is opened, before any training starts.

`config.dataset`:
  * "tfds":    `config.tfds_name` (e.g. "wmt14_translate/de-en") read through `tfds.data_source`,
               which never imports TensorFlow. The dataset must be prepared in ArrayRecord format
               first (see docs/data.md); nothing is downloaded here.
  * "text":    `config.data_dir` holding `{split}.{source_lang}` and `{split}.{target_lang}`
               (line-aligned) or `{split}.tsv` (two tab-separated columns, source then target,
               or any order under a header line naming the languages).
  * "numbers": the built-in task of `number_task.py`.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import logging

from transformer.data import number_task

DATASETS = ("numbers", "tfds", "text")

# Split names tried in order when `{split}.*` is not in a text directory.
SPLIT_ALIASES = {"validation": ("validation", "valid", "val", "dev"),
                 "test": ("test", "newstest2014", "test_2016_flickr")}


class DataError(ValueError):
  """The input data or its configuration is wrong; the message says what and how to fix it."""


class PairSource:
  """A split of raw (source, target) pairs: `len()` and `get(indices)`."""

  name: str = ""

  def __len__(self) -> int:
    raise NotImplementedError

  def get(self, indices: Sequence[int]) -> list[tuple[str, str]]:
    raise NotImplementedError

  def all(self) -> list[tuple[str, str]]:
    return self.get(range(len(self)))


class ListSource(PairSource):

  def __init__(self, pairs: list[tuple[str, str]], name: str):
    self._pairs = pairs
    self.name = name

  def __len__(self):
    return len(self._pairs)

  def get(self, indices):
    if isinstance(indices, range) and indices.step == 1:
      return self._pairs[indices.start:indices.stop]
    return [self._pairs[i] for i in indices]


# ---------------------------------------------------------------------------------------------
# Local parallel text.


def _read_lines(path: str) -> list[str]:
  """Lines of a UTF-8 file (without line ends); DataError names the file and the bad line."""
  if not os.path.isfile(path):
    directory = os.path.dirname(path) or "."
    present = sorted(os.listdir(directory)) if os.path.isdir(directory) else None
    hint = ("the directory does not exist" if present is None else
            f"the directory holds: {', '.join(present[:20]) or 'nothing'}")
    raise DataError(f"Missing file {path} ({hint}). Set config.data_dir to a directory with "
                    f"{{split}}.{{lang}} or {{split}}.tsv files, or fix the split and language "
                    f"names (config.*_split, config.source_lang, config.target_lang).")
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise DataError(f"{path}, line {line}: the text is not UTF-8 ({e.reason} at byte "
                    f"{e.start}). Convert the file, e.g. `iconv -f latin1 -t utf-8`.") from e
  if text.startswith("\ufeff"):
    text = text[1:]
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line[:-1] if line.endswith("\r") else line for line in lines]


def _find_split_files(data_dir: str, split: str, src: str, tgt: str):
  """Returns ("pair", src_path, tgt_path) or ("tsv", path, None)."""
  if not data_dir:
    raise DataError('config.dataset="text" needs config.data_dir, a directory of '
                    "{split}.{lang} or {split}.tsv files.")
  if not os.path.isdir(data_dir):
    raise DataError(f"config.data_dir={data_dir!r} is not a directory.")
  names = (split,) + tuple(a for a in SPLIT_ALIASES.get(split, ()) if a != split)
  for name in names:
    s, t = (os.path.join(data_dir, f"{name}.{lang}") for lang in (src, tgt))
    if os.path.isfile(s) or os.path.isfile(t):
      if name != split:
        logging.info("Split %r read from %s.{%s,%s}.", split, name, src, tgt)
      return "pair", s, t
    tsv = os.path.join(data_dir, f"{name}.tsv")
    if os.path.isfile(tsv):
      return "tsv", tsv, None
  # Nothing found: name the files we looked for.
  return "pair", os.path.join(data_dir, f"{split}.{src}"), os.path.join(data_dir,
                                                                       f"{split}.{tgt}")


def _text_source(config, split: str) -> PairSource:
  src_lang, tgt_lang = config.source_lang, config.target_lang
  kind, a, b = _find_split_files(config.data_dir, split, src_lang, tgt_lang)
  if kind == "pair":
    src_lines, tgt_lines = _read_lines(a), _read_lines(b)
    if len(src_lines) != len(tgt_lines):
      raise DataError(f"Line counts differ: {a} has {len(src_lines)} lines, {b} has "
                      f"{len(tgt_lines)}. The files must be line-aligned translations; fix or "
                      f"re-export them.")
    return ListSource(list(zip(src_lines, tgt_lines)), name=f"{a} + {b}")
  lines = _read_lines(a)
  cols = (0, 1)
  first_line = 1  # the file's line number of lines[0]
  if lines:
    head = lines[0].split("\t")
    if src_lang in head and tgt_lang in head:
      cols = (head.index(src_lang), head.index(tgt_lang))
      lines, first_line = lines[1:], 2
  pairs = []
  for i, line in enumerate(lines):
    fields = line.split("\t")
    if len(fields) < 2:
      if not line.strip():
        pairs.append(("", ""))
        continue
      raise DataError(f"{a}, line {i + first_line}: expected two tab-separated columns "
                      f"(source, target), found {len(fields)}.")
    pairs.append((fields[cols[0]], fields[cols[1]]))
  return ListSource(pairs, name=a)


# ---------------------------------------------------------------------------------------------
# tensorflow-datasets, read without TensorFlow.


def _import_tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  # Without TensorFlow the older dataset modules (wmt*) register only when imported.
  import tensorflow_datasets.translate  # pylint: disable=g-import-not-at-top,unused-import
  return tfds


class TfdsSource(PairSource):
  """A split of a tfds translation dataset through `tfds.data_source` (ArrayRecord, no TF)."""

  def __init__(self, config, split: str):
    tfds = _import_tfds()
    name, data_dir = config.tfds_name, config.tfds_data_dir or None
    if not name:
      raise DataError('config.dataset="tfds" needs config.tfds_name, e.g. '
                      '"wmt14_translate/de-en".')
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise DataError(f"Unknown tfds dataset config.tfds_name={name!r}. Use a tfds translation "
                      f"dataset name with its config, e.g. 'wmt14_translate/de-en', "
                      f"'wmt14_translate/fr-en', 'ted_hrlr_translate/pt_to_en'.") from e
    features = builder.info.features
    languages = list(getattr(features, "languages", None) or
                     (features.keys() if hasattr(features, "keys") else []))
    for key, lang in (("source_lang", config.source_lang), ("target_lang", config.target_lang)):
      if lang not in languages:
        raise DataError(f"config.{key}={lang!r} is not a language of tfds dataset {name!r} "
                        f"(it has {', '.join(languages)}). Set config.source_lang and "
                        f"config.target_lang to two of these (any direction; tfds names WMT "
                        f"pairs 'de-en' whichever way you translate).")
    try:
      self._ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
      len(self._ds)  # opens the files: a split that is not prepared fails here
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(
          f"Cannot read split {split!r} of tfds dataset {name!r} (data_dir={data_dir}): {e}\n"
          f"Prepare it once in ArrayRecord format on a machine with internet (see docs/data.md):"
          f"\n  python -m transformer.data.prepare --tfds_name={name}"
          + (f" --data_dir={data_dir}" if data_dir else "") +
          f"\nand check the split name (this dataset has: "
          f"{', '.join(builder.info.splits.keys()) or 'unknown until prepared'}).") from e
    self._src, self._tgt = config.source_lang, config.target_lang
    self.name = f"tfds:{name}[{split}]"

  def __len__(self):
    return len(self._ds)

  def get(self, indices):
    out = []
    for i in indices:
      ex = self._ds[int(i)]
      s, t = ex[self._src], ex[self._tgt]
      out.append((s.decode("utf-8") if isinstance(s, bytes) else s,
                  t.decode("utf-8") if isinstance(t, bytes) else t))
    return out


# ---------------------------------------------------------------------------------------------


def open_source(config, split: str) -> PairSource:
  """Opens one split of `config.dataset`; raises DataError on bad input or configuration."""
  if config.source_lang == config.target_lang:
    raise DataError(f"config.source_lang and config.target_lang are both "
                    f"{config.source_lang!r}; choose two languages.")
  if config.dataset == "numbers":
    try:
      pairs = number_task.number_pairs(config.numbers, split, seed=config.seed,
                                       source_lang=config.source_lang,
                                       target_lang=config.target_lang)
    except ValueError as e:
      raise DataError(str(e)) from e
    return ListSource(pairs, name=f"numbers[{split}]")
  if config.dataset == "text":
    return _text_source(config, split)
  if config.dataset == "tfds":
    return TfdsSource(config, split)
  raise DataError(f"config.dataset={config.dataset!r} is unknown; allowed: "
                  f"{', '.join(DATASETS)}.")


def _file_stats(paths) -> list:
  """[path, size, modification time in ns] of each existing file: a changed file changes them."""
  out = []
  for path in paths:
    if os.path.isfile(path):
      st = os.stat(path)
      out.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
  return out


def source_identity(config, split: str) -> dict | None:
  """What a split's pairs depend on, without reading them: the settings that select them and the
  size and modification time of every file they come from. Two calls give equal dicts only when
  the pairs are the same; None where that cannot be told (the files are missing: opening the
  source raises the DataError that says so)."""
  identity = {"dataset": config.dataset, "split": split, "source_lang": config.source_lang,
              "target_lang": config.target_lang}
  if config.dataset == "numbers":
    return {**identity, "numbers": config.numbers.to_dict(), "seed": int(config.seed)}
  if config.dataset == "text":
    try:
      _, a, b = _find_split_files(config.data_dir, split, config.source_lang, config.target_lang)
    except DataError:
      return None
    files = _file_stats([a] + ([b] if b else []))
    return {**identity, "files": files} if files else None
  if config.dataset == "tfds" and config.tfds_name:
    tfds = _import_tfds()
    try:
      builder = tfds.builder(config.tfds_name, data_dir=config.tfds_data_dir or None)
      directory = builder.data_dir
      names = sorted(os.listdir(directory))
    except Exception:  # pylint: disable=broad-except  (not prepared: open_source says so)
      return None
    return {**identity, "tfds_name": config.tfds_name, "version": str(builder.version),
            "files": _file_stats(os.path.join(directory, n) for n in names)}
  return None


def shard_range(n: int, process_index: int, process_count: int) -> range:
  """The contiguous part of [0, n) that host `process_index` of `process_count` reads."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count="
                     f"{process_count}).")
  return range(n * process_index // process_count, n * (process_index + 1) // process_count)


def load_pairs(config, split: str) -> list[tuple[str, str]]:
  """The raw (source, target) texts of a split, in file order (for BLEU and translation)."""
  return open_source(config, split).all()
