"""Encode once: the tokenized training split cached in the workdir (data/encoded_cache.py)."""

import os
import time

import numpy as np
import pytest
from test_data_pipeline import DE, EN, make_config, sentence  # the same corpus and config

from transformer.data import encoded_cache, pipeline, sources
from transformer.data import tokenizer as tokenizer_lib
from transformer.data.batching import Examples


@pytest.fixture
def data_dir(tmp_path):
  d = tmp_path / "corpus"
  d.mkdir()
  rng = np.random.default_rng(1)
  for split, n in (("train", 150), ("validation", 20)):
    (d / f"{split}.en").write_text("\n".join(sentence(rng, EN, i) for i in range(n)) + "\n")
    (d / f"{split}.de").write_text("\n".join(sentence(rng, DE, i) for i in range(n)) + "\n")
  return d


@pytest.fixture
def tok(data_dir):
  text = (data_dir / "train.en").read_text().split("\n") + (data_dir / "train.de").read_text(
  ).split("\n")
  return tokenizer_lib.train_tokenizer(text, vocab_size=60)


def batches(it, n=12):
  return [next(it) for _ in range(n)]


def entries(cache_dir):
  return sorted(n for n in os.listdir(cache_dir) if not n.startswith(".")) if os.path.isdir(
      cache_dir) else []


def encode_once(data_dir, tok, cache_dir):
  """A first start's config and the one entry it writes to `cache_dir`."""
  config = make_config(data_dir)
  pipeline.make_train_iterator(config, tok, cache_dir=cache_dir)
  (key,) = entries(cache_dir)
  return config, key


def forbid_reading(monkeypatch):
  """Opening the source now fails the test: a cache hit must not read or tokenize text."""
  def fail(*args, **kwargs):
    raise AssertionError("the source was read although the cache holds the split")
  monkeypatch.setattr(sources, "open_source", fail)


@pytest.mark.parametrize("mode", ["padded", "tokens", "packed"])
def test_the_second_start_reads_the_cache_and_gives_the_same_batches(
    data_dir, tok, tmp_path, monkeypatch, mode):
  config = make_config(data_dir, batching=mode)
  cache_dir = str(tmp_path / "encoded")
  uncached = batches(pipeline.make_train_iterator(config, tok))
  first = batches(pipeline.make_train_iterator(config, tok, cache_dir=cache_dir))
  assert len(entries(cache_dir)) == 1
  forbid_reading(monkeypatch)
  second_it = pipeline.make_train_iterator(config, tok, cache_dir=cache_dir)
  second = batches(second_it)
  for a, b, c in zip(uncached, first, second):
    assert a.keys() == b.keys() == c.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
      np.testing.assert_array_equal(a[k], c[k])
  # Resuming from the cached arrays continues exactly.
  state = second_it.get_state()
  expected = batches(second_it, 3)
  resumed = pipeline.make_train_iterator(config, tok, cache_dir=cache_dir)
  resumed.set_state(state)
  for a, b in zip(expected, batches(resumed, 3)):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_the_cached_arrays_are_memory_mapped_and_equal_to_encoding_again(data_dir, tok,
                                                                         tmp_path):
  cache_dir = str(tmp_path / "encoded")
  config, key = encode_once(data_dir, tok, cache_dir)
  cached = encoded_cache.load(cache_dir, key)
  for name in encoded_cache.ARRAYS:  # views of the files, not copies
    array = getattr(cached, name)
    assert type(array) is np.ndarray and isinstance(array.base, np.memmap), name
  fresh = pipeline.batching.encode_examples(pipeline.load_pairs(config, "train"), tok,
                                            max_length=config.max_length)
  for name in encoded_cache.ARRAYS:
    np.testing.assert_array_equal(getattr(cached, name), getattr(fresh, name))


def test_a_changed_source_file_is_encoded_again_and_replaces_the_old_entry(data_dir, tok,
                                                                          tmp_path):
  cache_dir = str(tmp_path / "encoded")
  config, old = encode_once(data_dir, tok, cache_dir)
  path = data_dir / "train.de"
  lines = path.read_text().split("\n")
  lines[0] = "der Hund"  # one target sentence changed
  time.sleep(0.01)
  path.write_text("\n".join(lines))
  it = pipeline.make_train_iterator(config, tok, cache_dir=cache_dir)
  (new,) = entries(cache_dir)
  assert new != old
  cached = encoded_cache.load(cache_dir, new)
  assert tok.decode(cached.target(0)) == "der Hund"
  next(it)


def test_another_tokenizer_or_length_setting_gets_its_own_key(data_dir, tok, tmp_path):
  config = make_config(data_dir)
  identity = sources.source_identity(config, "train")
  part = {"whole": True}
  other_tok = tokenizer_lib.train_tokenizer(
      (data_dir / "train.en").read_text().split("\n"), vocab_size=40)
  keys = {encoded_cache.cache_key(identity, part, tok.fingerprint(), max_length=48,
                                  overlong="drop"),
          encoded_cache.cache_key(identity, part, other_tok.fingerprint(), max_length=48,
                                  overlong="drop"),
          encoded_cache.cache_key(identity, part, tok.fingerprint(), max_length=32,
                                  overlong="drop"),
          encoded_cache.cache_key(identity, part, tok.fingerprint(), max_length=48,
                                  overlong="truncate"),
          encoded_cache.cache_key(identity, {"process_index": 1, "process_count": 2},
                                  tok.fingerprint(), max_length=48, overlong="drop")}
  assert len(keys) == 5
  assert tok.fingerprint() == tokenizer_lib.Tokenizer(
      tok._sp.serialized_model_proto()).fingerprint()  # pylint: disable=protected-access


def test_two_hosts_share_the_whole_split_and_keep_their_own_shards(data_dir, tok, tmp_path,
                                                                   monkeypatch):
  """Token-budget batching plans over the whole split on every host: host 0 encodes it once
  and host 1 reads that entry. Padded batching: each host's shard is its own entry."""
  cache_dir = str(tmp_path / "encoded")
  config = make_config(data_dir, batching="tokens")
  host0 = batches(pipeline.make_train_iterator(config, tok, process_index=0, process_count=2,
                                               cache_dir=cache_dir), 4)
  padded = make_config(data_dir, batching="padded")
  for i in range(2):
    pipeline.make_train_iterator(padded, tok, process_index=i, process_count=2,
                                 cache_dir=cache_dir)
  assert len(entries(cache_dir)) == 3
  forbid_reading(monkeypatch)
  host1 = batches(pipeline.make_train_iterator(config, tok, process_index=1, process_count=2,
                                               cache_dir=cache_dir), 4)
  for a, b in zip(host0, host1):  # one global plan: equal shapes, different rows
    assert a["inputs"].shape == b["inputs"].shape
  pipeline.make_train_iterator(padded, tok, process_index=1, process_count=2,
                               cache_dir=cache_dir)


def test_an_unfinished_or_damaged_entry_is_never_read(data_dir, tok, tmp_path):
  cache_dir = str(tmp_path / "encoded")
  os.makedirs(os.path.join(cache_dir, ".tmp-abc"))  # a writer that died mid-way
  config, key = encode_once(data_dir, tok, cache_dir)
  with open(os.path.join(cache_dir, key, "src.npy"), "wb") as f:
    f.write(b"not an array")
  assert encoded_cache.load(cache_dir, key) is None
  pipeline.make_train_iterator(config, tok, cache_dir=cache_dir)  # encodes and rewrites it
  assert isinstance(encoded_cache.load(cache_dir, key), Examples)
