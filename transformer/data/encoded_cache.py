"""Encode once: a split's tokenized examples kept in the workdir and read back memory-mapped.

Every start and every resume used to read and tokenize the whole training split again (17.6 s
for a million pairs on 2 cores; WMT14 has 4.5 million). The arrays `batching.encode_examples`
makes (token ids and offsets, `batching.Examples`) are written once to
`WORKDIR/encoded/<key>/` and later opened with `np.load(mmap_mode="r")`: nothing is copied
until a batch reads it, and processes on one machine share the pages.

The key is a SHA-256 of everything the arrays depend on: the source's identity
(`sources.source_identity`: settings, and size and modification time of every file), the part
of the split (a host's shard or the whole split), the tokenizer model's bytes, `max_length`,
`overlong`, `keep_empty` and `FORMAT_VERSION`. Any change gives a new key, so a stale entry is
never read; entries for the same split and part under an older key are deleted when a new one
is written. A directory appears under its final name only once complete (written under a
temporary name, then renamed), so a crash or a concurrent writer never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid

import numpy as np
from absl import logging

from transformer.data.batching import Examples

ENCODED_DIR = "encoded"  # WORKDIR/encoded
FORMAT_VERSION = 1
ARRAYS = ("src", "src_off", "tgt", "tgt_off")
META = "meta.json"


def cache_key(identity: dict, part: dict, tokenizer_fingerprint: str, **settings) -> str:
  """Hex SHA-256 of the source identity, the part, the tokenizer and the encoding settings."""
  material = {"format": FORMAT_VERSION, "identity": identity, "part": part,
              "tokenizer": tokenizer_fingerprint, "settings": settings}
  text = json.dumps(material, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load(cache_dir: str, key: str) -> Examples | None:
  """The cached examples under `key`, memory-mapped (read-only), or None if there are none."""
  directory = os.path.join(cache_dir, key)
  if not os.path.isfile(os.path.join(directory, META)):
    return None
  try:
    # np.asarray: plain ndarray views of the maps (slicing an np.memmap, once per example in
    # the batchers, costs several times more than slicing an ndarray).
    arrays = [np.asarray(np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r"))
              for name in ARRAYS]
  except (OSError, ValueError) as e:  # damaged on disk: encode again (and replace it)
    logging.warning("Encoded-data cache %s is unreadable (%s); encoding again.", directory, e)
    return None
  return Examples(*arrays)


def save(cache_dir: str, key: str, examples: Examples, *, describe: dict) -> str:
  """Writes `examples` under `key` (complete or not at all) and deletes the entries it replaces:
  those whose `describe` (split and part) is the same but whose key differs. Returns the entry's
  directory. A concurrent writer of the same key wins or loses the rename harmlessly."""
  os.makedirs(cache_dir, exist_ok=True)
  final = os.path.join(cache_dir, key)
  tmp = os.path.join(cache_dir, f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  os.makedirs(tmp)
  try:
    for name in ARRAYS:
      np.save(os.path.join(tmp, f"{name}.npy"), np.ascontiguousarray(getattr(examples, name)))
    with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
      json.dump({"key": key, "format": FORMAT_VERSION, "examples": len(examples), **describe},
                f, indent=1)
    try:
      os.rename(tmp, final)
    except OSError:  # another process wrote the same key first: theirs is as good
      shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  _delete_replaced(cache_dir, key, describe)
  return final


def _delete_replaced(cache_dir: str, key: str, describe: dict) -> None:
  for name in os.listdir(cache_dir):
    meta_path = os.path.join(cache_dir, name, META)
    if name == key or not os.path.isfile(meta_path):
      continue
    try:
      with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    except (OSError, ValueError):
      continue
    if all(meta.get(k) == v for k, v in describe.items()):
      shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)
      logging.info("Deleted the encoded-data cache %s: its source or tokenizer changed.", name)


def encoded_examples(cache_dir: str | None, identity: dict | None, part: dict, tok, encode,
                     **settings) -> Examples:
  """`encode()`'s Examples, read from `cache_dir` when an entry with this key exists, else made
  and written there. No cache_dir, or a source whose identity is unknown: `encode()` alone."""
  if not cache_dir or identity is None:
    return encode()
  key = cache_key(identity, part, tok.fingerprint(), **settings)
  cached = load(cache_dir, key)
  if cached is not None:
    logging.info("Read %d encoded pairs of %s from %s (memory-mapped).", len(cached),
                 identity.get("split"), os.path.join(cache_dir, key))
    return cached
  if os.path.isdir(os.path.join(cache_dir, key)):  # complete once renamed, so damaged since
    shutil.rmtree(os.path.join(cache_dir, key), ignore_errors=True)
  examples = encode()
  where = save(cache_dir, key, examples,
               describe={"split": identity.get("split"), "part": part})
  logging.info("Saved %d encoded pairs to %s for the next start.", len(examples), where)
  return load(cache_dir, key) or examples
