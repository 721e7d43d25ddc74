"""Sources: local parallel text, the number task, tfds under mock_data; bad input gives its
message."""

import os
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

from transformer.data import number_task, sources
from transformer.data.sources import DataError


def make_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      dataset="text", tfds_name="", tfds_data_dir="", data_dir="", source_lang="en",
      target_lang="de", train_split="train", eval_split="validation", test_split="test", seed=0,
      numbers=ml_collections.ConfigDict(dict(max_number=9999, num_train=300, num_validation=50,
                                             num_test=50))))
  config.update(overrides)
  return config


def write(path, text, encoding="utf-8"):
  with open(path, "wb") as f:
    f.write(text.encode(encoding) if isinstance(text, str) else text)


# --- local parallel text ---------------------------------------------------------------------


def test_line_aligned_files_in_file_order(tmp_path):
  write(tmp_path / "train.en", "a cat\r\nthe dog\n\nlast\n")
  write(tmp_path / "train.de", "eine Katze\nder Hund\n\nletzte")
  config = make_config(data_dir=str(tmp_path))
  assert sources.load_pairs(config, "train") == [
      ("a cat", "eine Katze"), ("the dog", "der Hund"), ("", ""), ("last", "letzte")]
  config.source_lang, config.target_lang = "de", "en"       # the other direction
  assert sources.load_pairs(config, "train")[0] == ("eine Katze", "a cat")


def test_tsv_with_and_without_header_and_split_alias(tmp_path):
  write(tmp_path / "train.tsv", "one\teins\ntwo\tzwei\n")
  write(tmp_path / "val.tsv", "de\ten\ndrei\tthree\n")       # header names the columns
  config = make_config(data_dir=str(tmp_path))
  assert sources.load_pairs(config, "train") == [("one", "eins"), ("two", "zwei")]
  assert sources.load_pairs(config, "validation") == [("three", "drei")]
  # A bad row is named by its line in the file, the header counted.
  write(tmp_path / "val.tsv", "de\ten\ndrei\tthree\nno tab here\n")
  with pytest.raises(DataError, match=r"val\.tsv, line 3: expected two tab-separated columns"):
    sources.load_pairs(config, "validation")
  write(tmp_path / "train.tsv", "one\teins\nno tab here\n")
  with pytest.raises(DataError, match=r"train\.tsv, line 2: expected two tab-separated columns"):
    sources.load_pairs(config, "train")


def test_missing_file_is_named(tmp_path):
  write(tmp_path / "train.en", "a\n")
  with pytest.raises(DataError, match=r"Missing file .*train\.de.*train\.en"):
    sources.load_pairs(make_config(data_dir=str(tmp_path)), "train")
  with pytest.raises(DataError, match=r"Missing file .*test\.en"):
    sources.load_pairs(make_config(data_dir=str(tmp_path)), "test")


def test_differing_line_counts_name_both_files_and_counts(tmp_path):
  write(tmp_path / "train.en", "a\nb\nc\n")
  write(tmp_path / "train.de", "a\nb\n")
  with pytest.raises(DataError) as e:
    sources.load_pairs(make_config(data_dir=str(tmp_path)), "train")
  msg = str(e.value)
  assert "train.en has 3 lines" in msg and "train.de has 2" in msg


def test_non_utf8_names_file_and_line(tmp_path):
  write(tmp_path / "train.en", "a\nb\nc\n")
  write(tmp_path / "train.de", "a\nb\nGr\xfc\xdfe\n", encoding="latin-1")
  with pytest.raises(DataError, match=r"train\.de, line 3: the text is not UTF-8"):
    sources.load_pairs(make_config(data_dir=str(tmp_path)), "train")


def test_bad_config_values():
  with pytest.raises(DataError, match="config.dataset='nope' is unknown"):
    sources.open_source(make_config(dataset="nope"), "train")
  with pytest.raises(DataError, match="needs config.data_dir"):
    sources.open_source(make_config(), "train")
  with pytest.raises(DataError, match="both 'en'"):
    sources.open_source(make_config(target_lang="en"), "train")


def test_shards_cover_every_index_once():
  for n in (0, 1, 7, 100):
    for count in (1, 2, 3):
      got = [i for p in range(count) for i in sources.shard_range(n, p, count)]
      assert got == list(range(n))


# --- the number task -------------------------------------------------------------------------


def test_number_task_is_deterministic_disjoint_and_covers_small_numbers():
  cfg = make_config(dataset="numbers", source_lang="de", target_lang="en").numbers
  splits = {s: number_task.number_of_pair_numbers(cfg, s, seed=3) for s in number_task.SPLITS}
  again = number_task.number_of_pair_numbers(cfg, "train", seed=3)
  np.testing.assert_array_equal(splits["train"], again)
  other = number_task.number_of_pair_numbers(cfg, "train", seed=4)
  assert not np.array_equal(splits["train"], other)
  assert len(splits["train"]) == 300 and len(splits["validation"]) == 50
  train, val, test = (set(splits[s].tolist()) for s in number_task.SPLITS)
  assert set(range(100)) <= train
  assert not train & val and not train & test and not val & test
  assert len(val) == 50 and len(test) == 50                   # distinct within a split
  # Train is drawn uniformly over the digit count: each of 1..4 digits about a quarter.
  cfg.num_train = 2100
  digits = np.array([len(str(n)) for n in number_task.number_of_pair_numbers(cfg, "train", seed=3)])
  drawn = np.array([np.sum(digits == d) for d in range(1, 5)]) - [10, 90, 0, 0]   # minus 0..99
  assert np.all(np.abs(drawn / 2000 - 0.25) < 0.05), drawn
  # Held-out splits spread over 3 and 4 digits.
  assert {len(str(n)) for n in val} == {3, 4}


def test_number_pairs_are_words():
  config = make_config(dataset="numbers", source_lang="de", target_lang="en")
  pairs = sources.load_pairs(config, "train")
  numbers = number_task.number_of_pair_numbers(config.numbers, "train", seed=0)
  i = int(np.flatnonzero(numbers == 24)[0])
  assert pairs[i] == ("vierundzwanzig", "twenty-four")
  with pytest.raises(DataError, match="number task has splits"):
    sources.load_pairs(config, "dev")
  with pytest.raises(DataError, match="max_number=99 is too small"):
    sources.load_pairs(make_config(dataset="numbers", numbers=dict(
        max_number=99, num_train=300, num_validation=5, num_test=5)), "train")


def test_number_pairs_written_on_every_core_are_each_numbers_words(monkeypatch):
  from num2words import num2words  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(number_task, "MIN_NUMBERS_PER_PROCESS", 40)  # 300 numbers: one part a core
  number_task._cached_pairs.cache_clear()  # pylint: disable=protected-access
  config = make_config(dataset="numbers", source_lang="de", target_lang="en")
  pairs = sources.load_pairs(config, "train")
  number_task._cached_pairs.cache_clear()  # pylint: disable=protected-access
  numbers = number_task.number_of_pair_numbers(config.numbers, "train", seed=0)
  assert pairs == [(num2words(int(n), lang="de"), num2words(int(n), lang="en")) for n in numbers]


# --- tfds, under mock_data, in a fresh process (TensorFlow must never be imported) -----------


def test_tfds_under_mock_data_without_tensorflow():
  script = textwrap.dedent("""
      import sys
      import ml_collections
      import tensorflow_datasets as tfds
      from transformer.data import sources, pipeline
      from transformer.data.sources import DataError
      config = ml_collections.ConfigDict(dict(
          dataset="tfds", tfds_name="wmt14_translate/de-en", tfds_data_dir="", data_dir="",
          source_lang="en", target_lang="de", seed=0))
      with tfds.testing.mock_data(num_examples=7):
        pairs = sources.load_pairs(config, "train")
        assert len(pairs) == 7 and all(isinstance(s, str) and isinstance(t, str)
                                       for s, t in pairs), pairs
        ds = tfds.data_source("wmt14_translate/de-en", split="train")
        assert pairs[0] == (ds[0]["en"], ds[0]["de"])          # English -> German
        config.source_lang, config.target_lang = "de", "en"
        assert sources.load_pairs(config, "validation")[0][0] == \\
            tfds.data_source("wmt14_translate/de-en", split="validation")[0]["de"]
        src = sources.open_source(config, "train")
        assert len(src.get(range(3, 5))) == 2
        config.target_lang = "fr"
        try:
          sources.open_source(config, "train"); raise SystemExit("no error for fr")
        except DataError as e:
          assert "config.target_lang='fr' is not a language" in str(e), e
        config.target_lang, config.tfds_name = "en", "no_such_dataset/de-en"
        try:
          sources.open_source(config, "train"); raise SystemExit("no error for the name")
        except DataError as e:
          assert "Unknown tfds dataset config.tfds_name='no_such_dataset/de-en'" in str(e), e
      assert "tensorflow" not in sys.modules, "TensorFlow was imported on the read path"
      print("OK")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


MULTI30K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "multi30k")


@pytest.mark.skipif(not os.path.isdir(MULTI30K), reason="Multi30k is not beside the checkout")
def test_multi30k_reads():
  config = make_config(data_dir=MULTI30K)
  assert len(sources.load_pairs(config, "validation")) == 1014   # val.{en,de}
  assert len(sources.open_source(config, "train")) == 29000
