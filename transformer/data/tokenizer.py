"""One SentencePiece vocabulary shared by source and target, with the project's special ids.

The model is trained on a sample of the training split, source and target text together, with
`pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID` (transformer/config.py), saved as
WORKDIR/tokenizer.model and reused on resume and by translation. Sampling keeps training the
tokenizer on WMT-sized text to minutes. `Tokenizer.encode` adds neither BOS nor EOS; the batching
code appends EOS.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm
from absl import logging

from transformer.config import BOS_ID, EOS_ID, PAD_ID, UNK_ID

TOKENIZER_FILENAME = "tokenizer.model"
MODEL_TYPES = ("unigram", "bpe")


class Tokenizer:
  """A SentencePiece model: `encode(text) -> ids` (no BOS/EOS), `decode(ids) -> text`."""

  def __init__(self, model_proto: bytes, path: str = ""):
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.path = path
    expected = {"pad": PAD_ID, "eos": EOS_ID, "bos": BOS_ID, "unk": UNK_ID}
    actual = {"pad": self._sp.pad_id(), "eos": self._sp.eos_id(), "bos": self._sp.bos_id(),
              "unk": self._sp.unk_id()}
    if actual != expected:
      raise ValueError(f"Tokenizer {path or '(in memory)'} has special ids {actual}, the project "
                       f"needs {expected} (transformer/config.py). Delete it to train a new one.")

  @property
  def vocab_size(self) -> int:
    return self._sp.vocab_size()

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Sequence[str], num_threads: int = 2) -> list[list[int]]:
    return self._sp.encode(list(texts), num_threads=num_threads)

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids` up to the first EOS; PAD and BOS are ignored."""
    out = []
    for i in np.asarray(ids).reshape(-1).tolist():
      if i == EOS_ID:
        break
      if i not in (PAD_ID, BOS_ID):
        out.append(i)
    return self._sp.decode(out)

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    with open(path, "rb") as f:
      return cls(f.read(), path)


def train_tokenizer(sentences: Sequence[str], *, vocab_size: int, model_type: str = "unigram",
                    seed: int = 0) -> Tokenizer:
  """Trains SentencePiece on `sentences`; the vocabulary may come out smaller on tiny corpora."""
  if model_type not in MODEL_TYPES:
    raise ValueError(f"config.tokenizer_model={model_type!r} is unknown; allowed: "
                     f"{', '.join(MODEL_TYPES)}.")
  sentences = [s for s in sentences if s.strip()]
  if not sentences:
    raise ValueError("No text to train the tokenizer on: the training split is empty.")
  start = time.time()
  model = io.BytesIO()
  if hasattr(spm, "set_random_generator_seed"):
    spm.set_random_generator_seed(int(seed) + 1)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=int(vocab_size),
        model_type=model_type, pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
        character_coverage=0.9999, hard_vocab_limit=False, num_threads=2, minloglevel=2)
  except RuntimeError as e:
    raise ValueError(f"SentencePiece could not train a vocabulary of config.vocab_size="
                     f"{vocab_size} on {len(sentences)} sentences: {e} (vocab_size must exceed the number of "
                     f"distinct characters plus 4 special pieces).") \
        from e
  tok = Tokenizer(model.getvalue())
  if tok.vocab_size < vocab_size:
    logging.warning("config.vocab_size=%d: SentencePiece found only %d pieces in these %d "
                    "sentences, so the vocabulary has %d (the model's embedding follows it).",
                    vocab_size, tok.vocab_size, len(sentences), tok.vocab_size)
  logging.info("Trained a %s SentencePiece model on %d sentences in %.1f s: vocabulary %d "
               "(asked for %d).", model_type, len(sentences), time.time() - start,
               tok.vocab_size, vocab_size)
  return tok


def save_tokenizer(tok: Tokenizer, path: str) -> None:
  """Writes atomically: a temporary name in the same directory, then os.replace."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  with open(tmp, "wb") as f:
    f.write(tok._sp.serialized_model_proto())  # pylint: disable=protected-access
  os.replace(tmp, path)
  tok.path = path
