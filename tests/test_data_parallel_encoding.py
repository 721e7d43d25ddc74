"""parallel_encoding: pairs tokenized in parts on several processes give the one-process ids."""

import multiprocessing

import numpy as np
import pytest
from test_data_tokenizer import AWKWARD, corpus

from transformer.data import forked_parts, parallel_encoding
from transformer.data import tokenizer as tokenizer_lib

fork_only = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.train_tokenizer(corpus(), vocab_size=80, model_type="bpe")


def _pairs():
  texts = corpus(400, seed=5) + AWKWARD
  return list(zip(texts, texts[::-1]))  # AWKWARD's empty and blank texts make empty pairs


def _expected(tok, pairs, keep_empty=False):
  kept = [p for p in pairs if keep_empty or (p[0].strip() and p[1].strip())]
  return ([tok.encode(s) for s, _ in kept], [tok.encode(t) for _, t in kept],
          len(pairs) - len(kept))


def _assert_encodes(got, tok, pairs, keep_empty=False):
  src, tgt, num_empty = _expected(tok, pairs, keep_empty)
  assert got.num_empty == num_empty
  for flat, counts, ids in ((got.src, got.src_len, src), (got.tgt, got.tgt_len, tgt)):
    assert counts.dtype == np.int64 and counts.tolist() == [len(i) for i in ids]
    assert flat.dtype == np.int32 and flat.tolist() == [x for i in ids for x in i]


@fork_only
@pytest.mark.parametrize("processes,keep_empty", [(2, False), (3, False), (3, True)])
def test_parts_on_worker_processes_join_to_the_one_process_ids(tok, monkeypatch, processes,
                                                                keep_empty):
  monkeypatch.setattr(parallel_encoding, "CHUNK", 37)  # several chunks a part, children too
  pairs = _pairs()
  got = parallel_encoding.encode_pairs(tok, pairs, keep_empty=keep_empty, processes=processes,
                                       min_pairs_per_process=50)
  assert _expected(tok, pairs)[2] == 4  # the empty pairs fall into different parts
  _assert_encodes(got, tok, pairs, keep_empty)


def test_small_splits_stay_in_this_process(tok, monkeypatch):
  monkeypatch.setattr(forked_parts.multiprocessing, "get_context", None)  # would fail
  pairs = _pairs()
  _assert_encodes(parallel_encoding.encode_pairs(tok, pairs, processes=4), tok, pairs)
  assert parallel_encoding.encode_pairs(tok, [], processes=4).src.shape == (0,)
