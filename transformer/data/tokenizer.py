"""One SentencePiece vocabulary shared by source and target, with the project's special ids.

The model is trained on a sample of the training split, source and target text together, with
`pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID` (transformer/config.py), saved as
WORKDIR/tokenizer.model and reused on resume and by translation. Sampling keeps training the
tokenizer on WMT-sized text to minutes. `Tokenizer.encode` adds neither BOS nor EOS; the batching
code appends EOS.

Large splits are encoded with `Tokenizer.encode_flat`: SentencePiece cuts a text at every space
and no piece of our models spans one, so a text's ids are its space-separated words' ids end to
end, and each distinct word is encoded once (a cache, as Hugging Face's tokenizers keep for
BPE). The result is `encode`'s, id for id; a model whose pieces could span a space (user-made
pieces with an inner "▁", no dummy prefix, whitespace kept as is) is encoded text by text.

`CharacterTokenizer` is the language model's alternative (nanoGPT's shakespeare_char): the same
four special ids first, then one id per distinct character of the training text, saved as
WORKDIR/characters.json. `load_workdir_tokenizer(workdir)` reads whichever of the two a workdir
holds.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import time
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm
from absl import logging

from transformer.config import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from transformer.data.ranges import concatenated_ranges
from transformer.files import write_atomically

WORD_CACHE_LIMIT = 1 << 21  # distinct words kept (about 250 MB at most); then it starts again

TOKENIZER_FILENAME = "tokenizer.model"
CHARACTERS_FILENAME = "characters.json"
MODEL_TYPES = ("unigram", "bpe")


class Tokenizer:
  """A SentencePiece model: `encode(text) -> ids` (no BOS/EOS), `decode(ids) -> text`."""

  def __init__(self, model_proto: bytes, path: str = ""):
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.path = path
    self.word_wise = _splits_at_spaces(model_proto)
    self._forget_words()
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

  def encode_flat(self, texts: Sequence[str], num_threads: int = 2
                  ) -> tuple[np.ndarray, np.ndarray]:
    """`encode` of every text: (all ids end to end [total] int32, each text's count [n] int64).

    Word by word where the model allows it (`word_wise`, module docstring): each word is looked
    up in a cache of the distinct words seen so far (their ids held end to end in one array), only
    new words go to SentencePiece (on `num_threads` threads), and the texts' ids are gathered from
    the cache in numpy; otherwise text by text."""
    if not self.word_wise:
      return _flatten(self.encode_batch(texts, num_threads=num_threads))
    if not texts:
      return np.zeros(0, np.int32), np.zeros(0, np.int64)
    words = " ".join(texts).split(" ")  # each text's words in order, texts end to end
    if len(self._word_index) > WORD_CACHE_LIMIT:
      self._forget_words()
    index = self._word_index
    word = np.fromiter(map(index.get, words, itertools.repeat(-1)), np.int64, len(words))
    missing = np.flatnonzero(word < 0).tolist()
    if missing:
      unseen = [words[i] for i in missing]
      self._learn_words(list(dict.fromkeys(unseen)), num_threads)
      word[missing] = np.fromiter(map(index.__getitem__, unseen), np.int64, len(unseen))
    per_word = self._word_len[word]
    flat = self._word_ids[concatenated_ranges(self._word_start[word], per_word)]
    words_per_text = np.fromiter(map(str.count, texts, itertools.repeat(" ")), np.int64,
                                 len(texts)) + 1
    return flat, np.add.reduceat(per_word, np.cumsum(words_per_text) - words_per_text)

  def _learn_words(self, new: list[str], num_threads: int) -> None:
    """Encodes words not in the cache and appends them to it."""
    ids, lengths = _flatten(self._sp.encode(new, num_threads=num_threads))
    self._word_start = np.concatenate(
        [self._word_start, len(self._word_ids) + np.cumsum(lengths) - lengths])
    self._word_len = np.concatenate([self._word_len, lengths])
    self._word_ids = np.concatenate([self._word_ids, ids])
    self._word_index.update(zip(new, range(len(self._word_index), len(self._word_index)
                                           + len(new))))

  def _forget_words(self) -> None:
    self._word_index: dict[str, int] = {}  # word -> its row in the arrays below
    self._word_start = np.zeros(0, np.int64)
    self._word_len = np.zeros(0, np.int64)
    self._word_ids = np.zeros(0, np.int32)

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

  def fingerprint(self) -> str:
    """SHA-256 of the model: equal for tokenizers that encode every text alike."""
    return hashlib.sha256(self._sp.serialized_model_proto()).hexdigest()

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    with open(path, "rb") as f:
      return cls(f.read(), path)


def _flatten(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
  """Lists of ids as (all ids end to end [total] int32, each list's length [n] int64)."""
  lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
  return np.fromiter(itertools.chain.from_iterable(seqs), np.int32, int(lengths.sum())), lengths


def _splits_at_spaces(model_proto: bytes) -> bool:
  """Whether this SentencePiece model encodes a text as its space-separated words, each alone:
  every word gets the "▁" prefix (add_dummy_prefix), runs of spaces count as one
  (remove_extra_whitespaces) and no piece holds a "▁" after its first character, so none spans
  a space. Our models are trained so (split_by_whitespace, SentencePiece's default)."""
  try:
    from sentencepiece import sentencepiece_model_pb2  # needs protobuf
  except ImportError:
    return False
  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(model_proto)
  norm = model.normalizer_spec
  return (norm.add_dummy_prefix and norm.remove_extra_whitespaces
          and not model.trainer_spec.treat_whitespace_as_suffix
          and not any("\u2581" in piece.piece[1:] for piece in model.pieces))


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
                     f"{vocab_size} on {len(sentences)} sentences: {e} (vocab_size must exceed "
                     f"the number of distinct characters plus 4 special pieces).") from e
  tok = Tokenizer(model.getvalue())
  if tok.vocab_size < vocab_size:
    logging.warning("config.vocab_size=%d: SentencePiece found only %d pieces in these %d "
                    "sentences, so the vocabulary has %d (the model's embedding follows it).",
                    vocab_size, tok.vocab_size, len(sentences), tok.vocab_size)
  logging.info("Trained a %s SentencePiece model on %d sentences in %.1f s: vocabulary %d "
               "(asked for %d).", model_type, len(sentences), time.time() - start,
               tok.vocab_size, vocab_size)
  return tok


def save_tokenizer(tok: "Tokenizer | CharacterTokenizer", path: str) -> None:
  """Writes atomically: a temporary name in the same directory, then os.replace."""
  if isinstance(tok, CharacterTokenizer):
    tok.save(path)
    return
  write_atomically(path, tok._sp.serialized_model_proto())  # pylint: disable=protected-access
  tok.path = path


# ---------------------------------------------------------------------------------------------
# Characters: the language model's vocabulary for small corpora (nanoGPT's shakespeare_char).

_SPECIAL_PIECES = {PAD_ID: "<pad>", EOS_ID: "</s>", BOS_ID: "<s>", UNK_ID: "<unk>"}
_SPECIAL_IDS = {"pad": PAD_ID, "eos": EOS_ID, "bos": BOS_ID, "unk": UNK_ID}
_NUM_SPECIAL = len(_SPECIAL_PIECES)   # characters start at id 4
_UNK_TEXT = "\ufffd"                  # what decode writes for UNK (and ids out of range)


def _code_points(text: str) -> np.ndarray:
  """[len(text)] uint32 code points, without a Python loop (lone surrogates kept as they are)."""
  return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class CharacterTokenizer:
  """One id per character: PAD, EOS, BOS, UNK first (transformer/config.py), then the sorted
  distinct characters of the text it was built from; any other character encodes as UNK.
  `encode` adds neither BOS nor EOS, and a newline is an ordinary character.
  """

  def __init__(self, characters: Sequence[str], path: str = ""):
    characters = list(characters)
    bad = [c for c in characters if not isinstance(c, str) or len(c) != 1]
    if bad or len(set(characters)) != len(characters):
      raise ValueError(f"CharacterTokenizer {path or '(in memory)'}: the characters must be "
                       f"distinct single characters (got {len(characters)}, bad: {bad[:5]}).")
    self.characters = sorted(characters)
    self.path = path
    self._code_points = _code_points("".join(self.characters))   # sorted, for searchsorted
    self._pieces = ["", "", "", _UNK_TEXT] + self.characters       # what decode writes per id

  @classmethod
  def from_text(cls, text: str) -> "CharacterTokenizer":
    """The vocabulary of `text`: its distinct characters in code-point order."""
    return cls(sorted(set(text)))

  @property
  def vocab_size(self) -> int:
    return _NUM_SPECIAL + len(self.characters)

  def encode_array(self, text: str, chunk: int = 1 << 22) -> np.ndarray:
    """[len(text)] int32 ids, vectorised: a binary search of each code point in the vocabulary,
    `chunk` characters at a time (the temporaries take about 17 bytes per character)."""
    ids = np.full(len(text), UNK_ID, np.int32)
    if not self.characters:
      return ids
    last = len(self._code_points) - 1
    for start in range(0, len(text), chunk):
      points = _code_points(text[start:start + chunk])
      pos = np.searchsorted(self._code_points, points)
      found = self._code_points[np.minimum(pos, last)] == points
      ids[start:start + len(points)][found] = pos[found] + _NUM_SPECIAL
    return ids

  def encode(self, text: str) -> list[int]:
    return self.encode_array(text).tolist()

  def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
    del num_threads  # the same signature as Tokenizer.encode_batch
    return [self.encode(t) for t in texts]

  def encode_flat(self, texts: Sequence[str], num_threads: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizer.encode_flat's result: all ids end to end, each text's count (its length)."""
    del num_threads
    return self.encode_array("".join(texts)), np.fromiter(map(len, texts), np.int64, len(texts))

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids`; PAD, EOS and BOS are skipped, UNK (or an unknown id) is U+FFFD."""
    pieces, n = self._pieces, len(self._pieces)
    return "".join(pieces[i] if 0 <= i < n else _UNK_TEXT
                   for i in np.asarray(ids).reshape(-1).tolist())

  def id_to_piece(self, i: int) -> str:
    i = int(i)
    if i in _SPECIAL_PIECES:
      return _SPECIAL_PIECES[i]
    if not 0 <= i < self.vocab_size:
      raise IndexError(f"id {i} is outside the vocabulary of {self.vocab_size}.")
    return self.characters[i - _NUM_SPECIAL]

  def save(self, path: str) -> None:
    """JSON {"type", "special_ids", "characters"}, written atomically."""
    data = {"type": "characters", "special_ids": _SPECIAL_IDS, "characters": self.characters}
    write_atomically(path, json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))
    self.path = path

  @classmethod
  def load(cls, path: str) -> "CharacterTokenizer":
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("characters"), list):
      raise ValueError(f"{path} is not a character vocabulary (JSON with a 'characters' list); "
                       f"delete it to build a new one.")
    if data.get("special_ids", _SPECIAL_IDS) != _SPECIAL_IDS:
      raise ValueError(f"CharacterTokenizer {path} has special ids {data['special_ids']}, the "
                       f"project needs {_SPECIAL_IDS} (transformer/config.py). Delete it to build "
                       f"a new one.")
    return cls(data["characters"], path)


def load_workdir_tokenizer(workdir: str) -> "Tokenizer | CharacterTokenizer | None":
  """WORKDIR/tokenizer.model as a Tokenizer, else WORKDIR/characters.json as a
  CharacterTokenizer, else None (the caller says what is missing)."""
  path = os.path.join(workdir, TOKENIZER_FILENAME)
  if os.path.exists(path):
    return Tokenizer.load(path)
  path = os.path.join(workdir, CHARACTERS_FILENAME)
  if os.path.exists(path):
    return CharacterTokenizer.load(path)
  return None
