"""transformer.data.prepare: tfds's own WMT14 builder, fed small archives in the statmt.org
layout from --manual_dir, prepares ArrayRecord files without TensorFlow, and the pipeline reads
back every pair; bad names fail in one line before anything is downloaded.

Not covered: the real download from statmt.org (no network here) and tfds's checksums of the real
archives (the test registers its small archives' sizes and SHA-256 in their place)."""

import io
import os
import subprocess
import sys
import tarfile
import textwrap

import ml_collections
import pytest

from transformer.data import prepare, sources

# The files tfds's wmt.py reads for wmt14_translate/de-en, in the archives statmt.org serves.
TRAIN = {  # subset -> (archive, German file, English file, (de, en) pairs)
    "europarl_v7": ("training-parallel-europarl-v7.tgz", "training/europarl-v7.de-en.de",
                    "training/europarl-v7.de-en.en",
                    [("Wiederaufnahme der Sitzungsperiode", "Resumption of the session"),
                     ("Die Fähre über den Fluss", "The ferry across the river"),
                     ("Größe ist nicht alles", "Size is not everything")]),
    "commoncrawl": ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en.de",
                    "commoncrawl.de-en.en",
                    [("Ein Hund im Park", "A dog in the park"),
                     ("", "an English line without German (skipped by tfds)"),
                     ("Zwei Katzen schlafen", "Two cats sleep")]),
    "newscommentary_v9": ("training-parallel-nc-v9.tgz", "training/news-commentary-v9.de-en.de",
                          "training/news-commentary-v9.de-en.en",
                          [("Die Wirtschaft wächst", "The economy grows"),
                           ("Preise steigen", "Prices rise")]),
}
VALIDATION = [("Gute Nacht", "Good night"), ("Bis morgen", "See you tomorrow")]   # newstest2013
TEST = [("Ein grünes Haus", "A green house"), ("Es regnet & stürmt", "It rains & storms")]
URLS = {"training-parallel-europarl-v7.tgz":
        "http://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz",
        "training-parallel-commoncrawl.tgz":
        "http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz",
        "training-parallel-nc-v9.tgz": "http://www.statmt.org/wmt14/training-parallel-nc-v9.tgz",
        "dev.tgz": "http://data.statmt.org/wmt19/translation-task/dev.tgz"}


def sgm(lang, texts):
  segs = "".join(f'<seg id="{i + 1}">{t}</seg>\n' for i, t in enumerate(texts))
  return f'<srcset setid="newstest2014" srclang="any">\n<doc sysid="ref" docid="x" ' \
         f'genre="news" origlang="{lang}">\n{segs}</doc>\n</srcset>\n'


def write_archives(manual_dir):
  """The four statmt.org archives wmt14_translate/de-en needs, with the test's pairs."""
  files = {name: {} for name in URLS}
  for archive, de_path, en_path, pairs in TRAIN.values():
    files[archive][de_path] = "\n".join(de for de, _ in pairs) + "\n"
    files[archive][en_path] = "\n".join(en for _, en in pairs) + "\n"
  files["dev.tgz"].update({
      "dev/newstest2013.de": "\n".join(de for de, _ in VALIDATION) + "\n",
      "dev/newstest2013.en": "\n".join(en for _, en in VALIDATION) + "\n",
      "dev/newstest2014-deen-src.de.sgm": sgm("de", [de for de, _ in TEST]),
      "dev/newstest2014-deen-ref.en.sgm": sgm("de", [en for _, en in TEST])})
  os.makedirs(manual_dir)
  for archive, members in files.items():
    with tarfile.open(os.path.join(manual_dir, archive), "w:gz") as tar:
      for member, text in members.items():
        data = text.encode("utf-8")
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


# Runs the command as users do (absl flags, prints) with three changes that keep it offline: tfds
# checks the archives in --manual_dir against their own sizes and SHA-256 instead of statmt.org's,
# any attempt to download fails, and a split over 0 bytes (not 1 GB) goes through the shuffler's
# bucket files, as WMT14's training split does. It runs twice: the second run reuses the data.
RUN = textwrap.dedent("""
    import importlib.util, os, sys
    from absl import flags
    from tensorflow_datasets.core import shuffle
    from tensorflow_datasets.core.download import checksums, downloader
    from tensorflow_datasets.translate import wmt14
    from transformer.data import prepare

    manual_dir, urls = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:6])
    wmt14.Wmt14Translate.url_infos = {
        url: checksums.compute_url_info(os.path.join(manual_dir, name))
        for name, url in urls.items()}
    def no_network(self, url, *args, **kwargs):
      raise AssertionError(f"tried to download {url}")
    downloader._Downloader._sync_download = no_network
    shuffle.MAX_MEM_BUFFER_SIZE = 0
    argv = flags.FLAGS(["prepare"] + sys.argv[6:])
    prepare.main(argv)
    prepare.main(argv)
    # Without TensorFlow installed (this project's environment) tfds ran on the stand-in.
    assert "tensorflow" not in sys.modules or importlib.util.find_spec("tensorflow")
    print("OK")
""")


def run_prepare(*args):
  return subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True,
                        timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def tfds_config(data_dir):
  """The base recipe's data settings (configs/wmt14_ende_base.py), English -> German."""
  return ml_collections.ConfigDict(dict(
      dataset="tfds", tfds_name="wmt14_translate/de-en", tfds_data_dir=str(data_dir),
      data_dir="", source_lang="en", target_lang="de", seed=0))


def test_wmt14_builder_prepares_offline_and_the_pipeline_reads_every_pair(tmp_path):
  manual, data, downloads = (str(tmp_path / d) for d in ("manual", "data", "downloads"))
  write_archives(manual)
  result = run_prepare(manual, *(f"{name}={url}" for name, url in URLS.items()),
                       "--tfds_name=wmt14_translate/de-en", f"--data_dir={data}",
                       f"--download_dir={downloads}", f"--manual_dir={manual}")
  assert result.returncode == 0 and result.stdout.endswith("OK\n"), result.stderr[-4000:]
  out = result.stdout
  where = out.index(f"  data       {data}/wmt14_translate/de-en/1.0.0")
  assert out.index("Preparing wmt14_translate/de-en/1.0.0 in ArrayRecord format") < where
  assert f"  downloads  {downloads} (unpacked into {downloads}/extracted" in out
  assert f"  manual     {manual} " in out
  train = [p for _, _, _, pairs in TRAIN.values() for p in pairs if all(p)]
  for split, pairs in (("train", train), ("validation", VALIDATION), ("test", TEST)):
    assert out.count(f"  {split:<12}{len(pairs):>12,} pairs\n") == 2, out  # both runs
    # Every pair, English -> German as the base config reads them (tfds shuffles the order).
    got = sources.open_source(tfds_config(data), split).all()
    assert sorted(got) == sorted((en, de) for de, en in pairs), (split, got)
  assert ": already prepared, nothing to download." in out                  # the second run
  assert sorted(os.listdir(os.path.join(downloads, "extracted")))          # archives unpacked
  assert not os.path.exists(os.path.join(downloads, "wmt14_translate"))    # nothing downloaded


def test_the_stand_in_covers_every_tensorflow_call_of_tfds():
  assert prepare.uncovered_tf_uses() == {}
  assert prepare.tf_uses(
      'from x import tensorflow as tf\n"""tf.io.gfile.Glob in a docstring"""\n'
      "# tf.data.Dataset in a comment\n"
      "f = tf.io.gfile.GFile(p, 'rb')\nexcept tf.errors.NotFoundError:\n") == {
          "io.gfile.GFile", "errors.NotFoundError"}
  assert prepare.uncovered_tf_uses(standin=prepare.types.SimpleNamespace()) != {}


def test_stand_in_files_and_text(tmp_path):
  path = str(tmp_path / "bucket.tmp")
  gfile = prepare._TF_STANDIN.io.gfile
  with gfile.GFile(path, "wb") as f:
    f.write(b"\x00\xffdata")
  assert gfile.exists(path) and open(path, "rb").read() == b"\x00\xffdata"
  gfile.copy(path, str(tmp_path / "copy"))
  with gfile.GFile(str(tmp_path / "copy"), "rb") as f:
    assert f.read() == b"\x00\xffdata"
  gfile.remove(path)
  assert not gfile.exists(path)
  with pytest.raises(prepare._TF_STANDIN.errors.UnimplementedError):
    gfile.copy("ftp://example.org/a.tgz", str(tmp_path / "a.tgz"))
  assert prepare._TF_STANDIN.compat.as_text("Größe".encode()) == "Größe"


def test_not_a_translation_dataset(tmp_path):
  with pytest.raises(prepare.PrepareError) as e:
    prepare.open_builder("mnist", str(tmp_path))
  assert "--tfds_name='mnist' is not a translation dataset (its features are image, label)" \
      in str(e.value)
  with pytest.raises(prepare.PrepareError, match=r"wmt14_translate has no config 'xx-en'; its "
                     r"configs: cs-en, de-en, fr-en, hi-en, ru-en\."):
    prepare.open_builder("wmt14_translate/xx-en", str(tmp_path))
  assert not os.listdir(tmp_path)


def test_unknown_name_is_one_line_before_any_download(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "transformer.data.prepare", "--tfds_name=no_such_dataset/de-en",
       f"--data_dir={tmp_path}"], capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
  assert errors[0].startswith("Error: --tfds_name='no_such_dataset/de-en': tfds has no dataset "
                              "'no_such_dataset'. Use a tfds translation dataset"), errors
  assert "Preparing" not in result.stdout and not os.listdir(tmp_path)
