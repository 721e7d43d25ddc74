"""The SentencePiece tokenizer: special ids, round trip, saved atomically and reused."""

import io
import os

import ml_collections
import numpy as np
import pytest
import sentencepiece as spm

from transformer.config import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from transformer.data import pipeline
from transformer.data import tokenizer as tokenizer_lib

WORDS = ("the cat sat on a mat while two dogs ran across green fields near the old river "
         "der Hund lief über die grüne Wiese am alten Fluss zwei Katzen schliefen").split()


def corpus(n=400, seed=0):
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.train_tokenizer(corpus(), vocab_size=80)


def test_special_ids(tok):
  assert [tok.id_to_piece(i) for i in (PAD_ID, EOS_ID, BOS_ID, UNK_ID)] == [
      "<pad>", "</s>", "<s>", "<unk>"]


def test_round_trip_without_bos_or_eos(tok):
  for text in corpus(20, seed=1) + ["die alte Katze", "über"]:
    ids = tok.encode(text)
    assert ids and EOS_ID not in ids and BOS_ID not in ids and PAD_ID not in ids
    assert tok.decode(ids) == text
  assert tok.encode_batch(["the cat", "der Hund"]) == [tok.encode("the cat"),
                                                       tok.encode("der Hund")]


# Spaces and what SentencePiece's nmt_nfkc normalization turns into spaces or drops: runs of
# spaces, leading and trailing ones, tabs, a no-break space, an ideographic space, a
# diaeresis (NFKC: space + combining mark), a control character, "▁" typed in, combining marks,
# characters the vocabulary lacks, empty texts.
AWKWARD = ["", " ", "  the  cat ", "the\tcat", "der\u00a0Hund", "zwei\u3000Katzen", "a\u00a8b",
           "x \u00a8 y", "fields\x1cnear", "\u2581the \u2581 cat", "u\u0308ber die", "☃ 日本 🙂",
           "the cat\n", "\u2002der Hund\u2003"]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_encode_flat_is_encode_of_every_text(model_type):
  tok = tokenizer_lib.train_tokenizer(corpus(), vocab_size=80, model_type=model_type)
  assert tok.word_wise  # our models never put a piece across a space
  texts = corpus(300, seed=2) + AWKWARD
  expected = [tok.encode(t) for t in texts]
  for _ in range(2):  # the second time every word comes from the cache
    flat, counts = tok.encode_flat(texts)
    assert counts.tolist() == [len(ids) for ids in expected]
    assert flat.dtype == np.int32 and flat.tolist() == [i for ids in expected for i in ids]
  assert [len(a) for a in (*tok.encode_flat([]),)] == [0, 0]


def test_a_model_whose_pieces_span_spaces_is_encoded_text_by_text():
  # No dummy prefix: the first word has no "▁", so words alone would be encoded differently.
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus()), model_writer=model, vocab_size=80, pad_id=PAD_ID,
      eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID, add_dummy_prefix=False, minloglevel=2)
  tok = tokenizer_lib.Tokenizer(model.getvalue())
  assert not tok.word_wise
  texts = corpus(50, seed=3) + AWKWARD
  flat, counts = tok.encode_flat(texts)
  assert flat.tolist() == [i for t in texts for i in tok.encode(t)]
  assert counts.tolist() == [len(tok.encode(t)) for t in texts]


def test_decode_stops_at_eos_and_ignores_pad(tok):
  ids = tok.encode("the cat")
  assert tok.decode([BOS_ID] + ids + [EOS_ID] + tok.encode("dog") + [PAD_ID]) == "the cat"
  assert tok.decode(np.array([ids + [PAD_ID, PAD_ID]], np.int32)) == "the cat"


def test_tiny_corpus_gets_a_smaller_vocabulary():
  tok = tokenizer_lib.train_tokenizer(["eins zwei drei", "vier fünf"] * 20, vocab_size=1000)
  assert tok.vocab_size < 1000
  assert tok.decode(tok.encode("zwei drei")) == "zwei drei"


def test_bad_model_type():
  with pytest.raises(ValueError, match="tokenizer_model='wordpiece' is unknown"):
    tokenizer_lib.train_tokenizer(corpus(10), vocab_size=50, model_type="wordpiece")


def test_get_tokenizer_trains_saves_and_reloads(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  lines = corpus(200)
  (data / "train.en").write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")
  (data / "train.de").write_text("\n".join(lines[100:]) + "\n", encoding="utf-8")
  config = ml_collections.ConfigDict(dict(
      dataset="text", data_dir=str(data), source_lang="en", target_lang="de",
      train_split="train", vocab_size=70, tokenizer_model="bpe", tokenizer_sample_sentences=120,
      seed=0))
  workdir = tmp_path / "work"
  tok = pipeline.get_tokenizer(config, str(workdir))
  assert os.listdir(workdir) == ["tokenizer.model"]              # no temporary file left
  config.vocab_size = 999                                         # ignored: the saved one is used
  again = pipeline.get_tokenizer(config, str(workdir))
  assert again.vocab_size == tok.vocab_size
  assert again.encode(lines[0]) == tok.encode(lines[0])
