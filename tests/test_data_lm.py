"""Language-model data: characters, nanoGPT's split, random windows, resume, eval coverage."""

import json
import os
import time

import grain
import ml_collections
import numpy as np
import pytest

from transformer.config import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from transformer.data import lm_data
from transformer.data import tokenizer as tokenizer_lib
from transformer.data.sources import DataError
from transformer.data.tokenizer import CharacterTokenizer

WORDS = ("to be or not that is the question whether tis nobler in mind suffer slings arrows of "
         "outrageous fortune take arms against a sea troubles").split()


def make_text(num_lines=300, seed=0):
  """A play-like text: a speaker line, then four lines of random words."""
  rng = np.random.default_rng(seed)
  lines = []
  for i in range(num_lines):
    words = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 10))))
    lines.append("HAMLET:" if i % 5 == 0 else words.capitalize() + ("." if i % 3 else "!"))
  return "\n".join(lines) + "\n"


def make_config(data_dir, **overrides):
  config = ml_collections.ConfigDict(dict(
      dataset="text_file", text_file="", data_dir=str(data_dir), tfds_name="",
      tfds_split="train", tfds_data_dir="", tfds_text_key="text", tokenizer="characters",
      tokenizer_model="unigram", vocab_size=80, validation_fraction=0.1, max_length=16,
      batch_size=8, eval_batch_size=6, num_eval_batches=0, seed=0, prefetch=0))
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A data_dir holding input.txt, as nanoGPT's data/shakespeare_char."""
  d = tmp_path_factory.mktemp("shakespeare")
  (d / "input.txt").write_text(make_text(), encoding="utf-8")
  return d


@pytest.fixture(scope="module")
def config(corpus):
  return make_config(corpus)


@pytest.fixture(scope="module")
def tok(config, tmp_path_factory):
  return lm_data.get_lm_tokenizer(config, str(tmp_path_factory.mktemp("work")))


def take(it, n):
  return [next(it) for _ in range(n)]


def same_batches(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in ("inputs", "targets"))


# ---------------------------------------------------------------------------------------------
# CharacterTokenizer.


def test_character_round_trip_and_unknown_character():
  tok = CharacterTokenizer.from_text("Hello, world!\nBye.")
  text = "Hello\nworld, Bye!"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.encode_array(text).dtype == np.int32 and tok.encode_array(text).tolist() == ids
  assert tok.encode("Hz") == [tok.encode("H")[0], UNK_ID]      # "z" is not in the vocabulary
  assert tok.decode(tok.encode("Hz")) == "H\ufffd"
  assert tok.decode([BOS_ID] + tok.encode("He") + [EOS_ID, PAD_ID, PAD_ID]) == "He"
  assert tok.encode("") == [] and tok.decode([]) == ""
  assert tok.encode_batch(["He", "ll"]) == [tok.encode("He"), tok.encode("ll")]


def test_specials_are_reserved_and_characters_sorted():
  text = "\x00\x01\x02\x03ba\nä€😀"      # code points 0..3 are characters like any other
  tok = CharacterTokenizer.from_text(text)
  assert tok.vocab_size == 4 + len(set(text))
  ids = tok.encode_array(text)
  assert ids.min() >= 4 and sorted(set(ids.tolist())) == list(range(4, tok.vocab_size))
  assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "</s>", "<s>", "<unk>"]
  assert [tok.id_to_piece(i) for i in range(4, tok.vocab_size)] == sorted(set(text))
  assert tok.decode(ids) == text


def test_encode_array_is_fast_on_a_megabyte():
  text = make_text(300) * 120 + "é"                  # about 1 MB
  tok = CharacterTokenizer.from_text(text)
  start = time.perf_counter()
  ids = tok.encode_array(text)
  assert time.perf_counter() - start < 1.0           # about 0.05 s: no Python loop per character
  assert len(ids) == len(text) and tok.decode(ids) == text


def test_save_load_and_load_workdir_tokenizer(tmp_path):
  assert tokenizer_lib.load_workdir_tokenizer(str(tmp_path)) is None
  tok = CharacterTokenizer.from_text("abc\nxyz ")
  path = tmp_path / tokenizer_lib.CHARACTERS_FILENAME
  tok.save(str(path))
  assert os.listdir(tmp_path) == ["characters.json"]          # no temporary file left
  assert json.loads(path.read_text(encoding="utf-8"))["characters"] == sorted("abc\nxyz ")
  again = CharacterTokenizer.load(str(path))
  assert again.characters == tok.characters and again.encode("zab\n") == tok.encode("zab\n")
  loaded = tokenizer_lib.load_workdir_tokenizer(str(tmp_path))
  assert isinstance(loaded, CharacterTokenizer) and loaded.characters == tok.characters
  sp = tokenizer_lib.train_tokenizer(make_text(200).split("\n"), vocab_size=60)
  tokenizer_lib.save_tokenizer(sp, str(tmp_path / tokenizer_lib.TOKENIZER_FILENAME))
  assert isinstance(tokenizer_lib.load_workdir_tokenizer(str(tmp_path)), tokenizer_lib.Tokenizer)


# ---------------------------------------------------------------------------------------------
# Text, split and vocabulary.


def test_split_is_nanogpts_first_ninety_percent():
  for n in (0, 1, 9, 10, 11, 99, 1001, 12345, 1115394):
    text = "".join(chr(97 + i % 26) for i in range(n))
    train, validation = lm_data.split_text(text, 0.1)
    assert len(train) == int(n * 0.9) and train + validation == text


def test_reads_data_dir_input_txt_or_text_file(corpus, tmp_path):
  text = (corpus / "input.txt").read_text(encoding="utf-8")
  assert lm_data.load_text(make_config(corpus)) == text
  other = tmp_path / "other.txt"
  other.write_text("\ufeffsome other text\n", encoding="utf-8")
  assert lm_data.load_text(make_config(tmp_path / "absent", text_file=str(other))) == (
      "some other text\n")


def test_tokenizer_from_train_text_only_saved_and_reused(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "input.txt").write_text("abcabcabc" * 10 + "Z", encoding="utf-8")   # Z: validation
  config, workdir = make_config(data), tmp_path / "work" / "run"
  tok = lm_data.get_lm_tokenizer(config, str(workdir), process_index=1)
  assert tok.characters == ["a", "b", "c"] and not workdir.exists()        # only host 0 writes
  tok = lm_data.get_lm_tokenizer(config, str(workdir))
  assert os.listdir(workdir) == ["characters.json"]
  train_ids, validation_ids = lm_data.lm_split_ids(config, tok)
  assert validation_ids[-1] == UNK_ID and UNK_ID not in train_ids
  (data / "input.txt").write_text("xyz" * 40, encoding="utf-8")
  assert lm_data.get_lm_tokenizer(config, str(workdir)).characters == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------
# Training batches.


def windows_of(ids, length):
  return np.lib.stride_tricks.sliding_window_view(ids, length + 1)


def test_train_batches_are_contiguous_train_windows(config, tok):
  train_ids, _ = lm_data.lm_split_ids(config, tok)
  all_windows = windows_of(train_ids, config.max_length)
  for batch in take(lm_data.make_lm_train_iterator(config, tok), 5):
    assert set(batch) == {"inputs", "targets"}
    for key in ("inputs", "targets"):
      assert batch[key].shape == (8, 16) and batch[key].dtype == np.int32
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    for x, y in zip(batch["inputs"], batch["targets"]):
      window = np.concatenate([x, y[-1:]])
      assert (all_windows == window).all(axis=1).any()   # a slice of train_ids, never validation


def test_offsets_reach_both_ends_of_a_minimal_text(tmp_path):
  (tmp_path / "input.txt").write_text("abcdefghij" * 2, encoding="utf-8")  # train: 18 chars
  config = make_config(tmp_path, max_length=16, batch_size=32)
  tok = CharacterTokenizer.from_text("abcdefghij")
  batch = next(lm_data.make_lm_train_iterator(config, tok))
  firsts = set(tok.decode(batch["inputs"][:, :1].reshape(-1)))
  assert firsts == {"a", "b"}                    # offsets 0 .. len(train) - max_length - 1 = 1


def test_same_seed_same_stream_other_seed_other_stream(config, tok):
  a = take(lm_data.make_lm_train_iterator(config, tok), 4)
  b = take(lm_data.make_lm_train_iterator(config.copy_and_resolve_references(), tok), 4)
  assert same_batches(a, b)
  assert not same_batches(a[1:], a[:-1])
  other = config.copy_and_resolve_references()
  other.seed = 1
  c = take(lm_data.make_lm_train_iterator(other, tok), 4)
  assert not any(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_from_state_continues_exactly(config, tok, prefetch):
  config = config.copy_and_resolve_references()
  config.prefetch = prefetch
  it = lm_data.make_lm_train_iterator(config, tok)
  take(it, 3)
  state = it.get_state()
  expected = take(it, 2)
  restored = lm_data.make_lm_train_iterator(config, tok)
  next(restored)                      # a fresh iterator that already moved on: set_state rewinds
  restored.set_state(state)
  assert same_batches(take(restored, 2), expected)


def test_resume_through_orbax_and_grain_checkpoint(config, tok, tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  it = lm_data.make_lm_train_iterator(config, tok)
  take(it, 3)
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as mngr:
    mngr.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = take(it, 2)
    restored = lm_data.make_lm_train_iterator(config, tok)
    mngr.restore(3, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointRestore(restored)))
  assert same_batches(take(restored, 2), expected)


def test_two_hosts_take_half_the_rows_and_different_windows(config, tok):
  hosts = [take(lm_data.make_lm_train_iterator(config, tok, process_index=p, process_count=2), 3)
           for p in (0, 1)]
  for batch in hosts[0] + hosts[1]:
    assert batch["inputs"].shape == (4, 16)
  assert not any(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(*hosts))


def test_rows_round_to_row_multiple(config, tok):
  batch = next(lm_data.make_lm_train_iterator(config, tok, row_multiple=3))
  assert batch["inputs"].shape == (6, 16)


# ---------------------------------------------------------------------------------------------
# Evaluation batches.


def eval_targets(batches):
  targets = np.concatenate([b["targets"].reshape(-1) for b in batches])
  return targets[targets != PAD_ID]


def test_eval_batches_predict_every_validation_token_once(config, tok):
  _, val_ids = lm_data.lm_split_ids(config, tok)
  batches = lm_data.make_lm_eval_batches(config, tok)
  assert sum(int((b["targets"] != PAD_ID).sum()) for b in batches) == len(val_ids) - 1
  np.testing.assert_array_equal(eval_targets(batches), val_ids[1:])
  np.testing.assert_array_equal(batches[0]["inputs"][0], val_ids[:16])
  for b in batches:
    assert b["inputs"].dtype == np.int32 and b["inputs"].shape == b["targets"].shape
    assert b["inputs"].shape[1] == 16
    np.testing.assert_array_equal(b["inputs"] == PAD_ID, b["targets"] == PAD_ID)
  assert {b["inputs"].shape[0] for b in batches[:-1]} == {6}
  assert len(lm_data.make_lm_eval_batches(config, tok, num_batches=2)) == 2


def test_eval_batches_of_two_hosts_agree_in_shape_and_cover_together(config, tok):
  _, val_ids = lm_data.lm_split_ids(config, tok)
  hosts = [lm_data.make_lm_eval_batches(config, tok, process_index=p, process_count=2,
                                        row_multiple=2) for p in (0, 1)]
  assert [b["inputs"].shape for b in hosts[0]] == [b["inputs"].shape for b in hosts[1]]
  assert {b["inputs"].shape[0] for b in hosts[0][:-1]} == {2}       # 6 // 2 rounded to 2
  np.testing.assert_array_equal(np.concatenate([eval_targets(h) for h in hosts]), val_ids[1:])


# ---------------------------------------------------------------------------------------------
# SentencePiece: EOS stands for the newline.


def test_sentencepiece_option_with_eos_as_newline(config, tmp_path):
  config = config.copy_and_resolve_references()
  config.tokenizer, config.vocab_size, config.tokenizer_model = "sentencepiece", 80, "bpe"
  tok = lm_data.get_lm_tokenizer(config, str(tmp_path))
  assert isinstance(tok, tokenizer_lib.Tokenizer) and 40 < tok.vocab_size <= 80
  assert os.listdir(tmp_path) == ["tokenizer.model"]
  text = lm_data.load_text(config)
  ids = lm_data.encode_text(tok, text)
  assert ids.dtype == np.int32 and int((ids == EOS_ID).sum()) == text.count("\n")
  assert lm_data.decode_lm(tok, ids) == text
  assert lm_data.decode_lm(tok, [BOS_ID] + ids[:30].tolist() + [PAD_ID]) == lm_data.decode_lm(
      tok, ids[:30])
  batch = next(lm_data.make_lm_train_iterator(config, tok))
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  _, val_ids = lm_data.lm_split_ids(config, tok)
  np.testing.assert_array_equal(eval_targets(lm_data.make_lm_eval_batches(config, tok)),
                                val_ids[1:])
  config.tokenizer = "characters"           # the workdir holds a SentencePiece model
  with pytest.raises(DataError, match="config.tokenizer='characters'"):
    lm_data.get_lm_tokenizer(config, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Errors: one line naming the key, the value and the fix.


def one_line_error(fn, *args, **kwargs) -> str:
  with pytest.raises(DataError) as e:
    fn(*args, **kwargs)
  message = str(e.value)
  assert "\n" not in message
  return message


def test_errors_name_the_config_key(config, tok, tmp_path):
  message = one_line_error(lm_data.load_text, make_config(tmp_path))
  assert f"config.data_dir='{tmp_path}'" in message and "input.txt" in message
  assert "config.data_dir" in one_line_error(lm_data.load_text, make_config(tmp_path / "nope"))
  assert "config.data_dir=''" in one_line_error(lm_data.load_text, make_config(""))
  assert "config.text_file='/no/such.txt'" in one_line_error(
      lm_data.load_text, make_config(tmp_path, text_file="/no/such.txt"))
  (tmp_path / "input.txt").write_text("  \n", encoding="utf-8")
  assert "empty" in one_line_error(lm_data.load_text, make_config(tmp_path))
  (tmp_path / "input.txt").write_bytes(b"caf\xe9\n")
  assert "not UTF-8" in one_line_error(lm_data.load_text, make_config(tmp_path))
  assert "config.dataset='wikitext'" in one_line_error(
      lm_data.load_text, make_config(tmp_path, dataset="wikitext"))
  long = config.copy_and_resolve_references()
  long.max_length = 10_000
  assert "config.max_length=10000" in one_line_error(lm_data.make_lm_train_iterator, long, tok)
  assert "config.tokenizer='bytes'" in one_line_error(
      lm_data.get_lm_tokenizer, make_config(tmp_path, tokenizer="bytes"), str(tmp_path))
  assert "config.validation_fraction=0.0" in one_line_error(
      lm_data.make_lm_eval_batches, make_config(config.data_dir, validation_fraction=0.0), tok)


# ---------------------------------------------------------------------------------------------
# tfds, without TensorFlow and offline: tfds.testing.mock_data.


def test_tfds_text_dataset_through_data_source():
  tfds = pytest.importorskip("tensorflow_datasets")
  texts = ["First Citizen:\nBefore we proceed", "any further, hear me speak."]

  def as_data_source(self, split, **kwargs):
    del self, kwargs
    assert split == "validation"
    return [{"text": texts[0].encode("utf-8")}, {"text": texts[1]}]    # bytes or str

  config = make_config("", dataset="tfds", tfds_name="tiny_shakespeare",
                       tfds_split="validation")
  try:
    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
      text = lm_data.load_text(config)
      config.tfds_text_key = "content"
      message = one_line_error(lm_data.load_text, config)
  except DataError as e:      # the builder could not be used here: not a failure of this code
    pytest.skip(f"tfds mock of tiny_shakespeare unavailable offline: {e}")
  assert text == "\n".join(texts)
  assert "config.tfds_text_key='content'" in message and "text" in message
  assert "config.tfds_name='no_such_dataset'" in one_line_error(
      lm_data.load_text, make_config("", dataset="tfds", tfds_name="no_such_dataset"))
