"""parallel_encoding: pairs tokenized in parts on several processes give the one-process ids."""

import os

import numpy as np
import pytest
from absl.testing import absltest
from test_data_tokenizer import AWKWARD, corpus

from transformer.data import parallel_encoding
from transformer.data import tokenizer as tokenizer_lib

fork_only = pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")


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
  monkeypatch.setattr(parallel_encoding.multiprocessing, "get_context", None)  # would fail
  pairs = _pairs()
  _assert_encodes(parallel_encoding.encode_pairs(tok, pairs, processes=4), tok, pairs)
  assert parallel_encoding.encode_pairs(tok, [], processes=4).src.shape == (0,)


class _FailingInChildren:
  """A tokenizer whose encode_flat raises, or kills its process, outside the parent."""

  def __init__(self, tok, how: str):
    self.tok, self.how, self.parent = tok, how, os.getpid()

  def encode_flat(self, texts, num_threads=1):
    if os.getpid() != self.parent:
      if self.how == "exit":
        os._exit(3)
      raise RuntimeError("no more memory in the child")
    return self.tok.encode_flat(texts, num_threads=num_threads)


@fork_only
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failed_child_s_part_is_encoded_here_with_a_warning(tok, how):
  pairs = _pairs()
  with absltest.mock.patch.object(parallel_encoding.logging, "warning") as warning:
    got = parallel_encoding.encode_pairs(_FailingInChildren(tok, how), pairs, processes=2,
                                         min_pairs_per_process=50)
  _assert_encodes(got, tok, pairs)
  message = warning.call_args[0][0] % warning.call_args[0][1:]
  assert "encoding its part here instead" in message
  assert ("no more memory in the child" if how == "raise" else "without an answer") in message
