r"""Downloads and prepares a tfds translation dataset in the ArrayRecord format the pipeline reads.

  python -m transformer.data.prepare --tfds_name=wmt14_translate/de-en \
      [--data_dir=DIR] [--download_dir=DIR] [--manual_dir=DIR]

`config.dataset="tfds"` (sources.py) reads a dataset prepared once in ArrayRecord format.
`tfds build` cannot prepare it in this project's environment: tfds's command line imports
TensorFlow, which the project does not install. This command calls tfds's Python API instead,
`tfds.builder(name).download_and_prepare(file_format="array_record")`, which writes ArrayRecord
files without TensorFlow, except for three file calls that tfds 4.9 still makes through
`tf.io.gfile`: unpacking downloaded archives, copying non-HTTP downloads, and the temporary
bucket files of a split over 1 GB (WMT14's training split is 1.46 GB). While TensorFlow is not
installed, those calls go to `etils.epath`, tfds's own file API (`_TF_STANDIN`); before anything
is downloaded the command checks that the installed tfds calls nothing else of TensorFlow there,
and says so in one line if it does. With TensorFlow installed, tfds uses it as usual.

Before starting it prints where the files go:
  data       DATA_DIR/NAME/CONFIG/VERSION, the ArrayRecord files the pipeline reads. DATA_DIR
             defaults to tfds's: $TFDS_DATA_DIR or ~/tensorflow_datasets; train with
             `--config.tfds_data_dir=DATA_DIR` when you set it.
  downloads  DOWNLOAD_DIR (default DATA_DIR/downloads): the archives as downloaded, unpacked into
             DOWNLOAD_DIR/extracted. Neither is read after preparation; delete them to free space.
  manual     MANUAL_DIR (default DOWNLOAD_DIR/manual): archives fetched by hand (on another
             machine) under the file names tfds records for the dataset are used instead of
             downloading, after tfds checks their size and SHA-256.
Then tfds downloads (progress bars), unpacks, parses and writes each split; at the end the
command prints each split with its number of pairs as the pipeline reads them
(`tfds.data_source`). Running it again reuses what is there: a prepared dataset is not rebuilt
and finished downloads are not fetched again.

WMT14 de-en (`wmt14_translate/de-en`): 1.58 GiB of archives from statmt.org, unpacked, parsed
into 4,508,785 training pairs and written as 1.36 GiB of ArrayRecord files (tfds's recorded
sizes, docs/data.md); the time was not measured here.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import importlib.resources.abc  # (importlib_resources.abc.Traversable, for tfds)
import importlib.util
import io
import resource
import sys
import tokenize
import types
from typing import Callable

from absl import app, flags
from etils import epath

from transformer.cli import fail

_TFDS_NAME = flags.DEFINE_string(
    "tfds_name", "wmt14_translate/de-en", "tfds translation dataset and config: NAME/CONFIG.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "Where the prepared dataset goes ('' = tfds's default, $TFDS_DATA_DIR or "
    "~/tensorflow_datasets); train with --config.tfds_data_dir set to the same directory.")
_DOWNLOAD_DIR = flags.DEFINE_string(
    "download_dir", "", "Where archives are downloaded and unpacked ('' = DATA_DIR/downloads).")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", "", "Archives fetched by hand, used instead of downloading "
    "('' = DOWNLOAD_DIR/manual).")

EXAMPLES = "wmt14_translate/de-en, wmt14_translate/fr-en, ted_hrlr_translate/pt_to_en"


class PrepareError(ValueError):
  """The dataset cannot be prepared; the message names the flag, its value and the fix."""


def _import_tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  # Without TensorFlow the older dataset modules (wmt*) register only when imported.
  import tensorflow_datasets.translate  # pylint: disable=g-import-not-at-top,unused-import
  return tfds


# ---------------------------------------------------------------------------------------------
# The dataset.


def open_builder(tfds_name: str, data_dir: str = ""):
  """tfds's builder for `tfds_name` under `data_dir`; PrepareError for an unknown name or
  config, a dataset that is not a translation, or one already prepared in another format."""
  tfds = _import_tfds()
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise PrepareError(f"--tfds_name={tfds_name!r}: tfds has no dataset "
                       f"{tfds_name.split('/')[0]!r}. Use a tfds translation dataset with its "
                       f"config, e.g. {EXAMPLES}.") from e
  except (ValueError, AssertionError) as e:  # an unknown config or version, a malformed name
    raise PrepareError(_name_error(tfds, tfds_name, e)) from e
  features = builder.info.features
  if not isinstance(features, tfds.features.Translation):
    keys = ", ".join(features.keys()) if hasattr(features, "keys") else type(features).__name__
    raise PrepareError(f"--tfds_name={tfds_name!r} is not a translation dataset (its features "
                       f"are {keys}); the pipeline reads datasets whose features are "
                       f"tfds.features.Translation, e.g. {EXAMPLES}.")
  file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
  if _is_prepared(builder) and file_format != "array_record":
    raise PrepareError(f"--tfds_name={tfds_name!r} is already prepared in {file_format} format "
                       f"at {builder.data_dir}, which the pipeline cannot read: delete that "
                       f"directory, or set --data_dir to another directory.")
  return builder


def _is_prepared(builder) -> bool:
  return epath.Path(builder.data_dir).exists() and builder.is_prepared()


def _name_error(tfds, tfds_name: str, error: Exception) -> str:
  """The configs of a known dataset given an unknown config; else the first line of tfds's
  message, without its "Failed to construct dataset ..., builder_kwargs ...:" prefix."""
  dataset, _, config = tfds_name.partition("/")
  try:
    configs = [c.name for c in tfds.builder_cls(dataset).BUILDER_CONFIGS]
  except Exception:  # pylint: disable=broad-except  (the name itself is malformed)
    configs = []
  if configs and config.split(":")[0] not in configs:
    return (f"--tfds_name={tfds_name!r}: {dataset} has no config {config!r}; its configs: "
            f"{', '.join(configs)}. Use NAME/CONFIG.")
  reason = str(error).splitlines()[0]
  if reason.startswith("Failed to construct dataset"):
    reason = reason.split('": ', 1)[-1]
  return f"--tfds_name={tfds_name!r}: {reason} Use NAME/CONFIG, e.g. {EXAMPLES}."


def split_sizes(builder, tfds_name: str, data_dir: str = "") -> dict[str, int]:
  """{split: number of examples} of the prepared dataset of `builder`, each split read from disk
  as the pipeline reads it."""
  tfds = _import_tfds()
  return {split: len(tfds.data_source(tfds_name, split=split, data_dir=data_dir or None,
                                      download=False))
          for split in builder.info.splits.keys()}


# ---------------------------------------------------------------------------------------------
# tfds's remaining TensorFlow file calls, on etils.epath.

# The tfds modules that call `tf.*` while a dataset is downloaded, unpacked and written.
TF_MODULES = ("tensorflow_datasets.core.download.extractor",
              "tensorflow_datasets.core.download.downloader",
              "tensorflow_datasets.core.shuffle")


class _NotRaised(Exception):
  """Stands for `tf.errors.ResourceExhaustedError`, which epath never raises (it raises OSError;
  `_more_open_files` makes room for the shuffler's 1,000 bucket files instead)."""


class _Unimplemented(Exception):
  """`tf.errors.UnimplementedError`: the downloader then fetches the URL with requests/urllib."""


def _copy(src, dst, overwrite: bool = False) -> None:
  """`tf.io.gfile.copy` of a local file; a URL (ftp://...) is left to the downloader."""
  if "://" in str(src):
    raise _Unimplemented(f"{src} is not a local file")
  epath.Path(src).copy(dst, overwrite=overwrite)


def _as_text(value, encoding: str = "utf-8") -> str:
  return value.decode(encoding) if isinstance(value, bytes) else str(value)


_TF_STANDIN = types.SimpleNamespace(
    compat=types.SimpleNamespace(as_text=_as_text),
    errors=types.SimpleNamespace(ResourceExhaustedError=_NotRaised,
                                 UnimplementedError=_Unimplemented),
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(
        GFile=lambda path, mode="r": epath.Path(path).open(mode),
        exists=lambda path: epath.Path(path).exists(),
        remove=lambda path: epath.Path(path).unlink(),
        copy=_copy)))


def tf_uses(source: str) -> set[str]:
  """The `tf.` attribute chains Python `source` uses ("io.gfile.GFile"); comments, strings and
  docstrings are skipped."""
  tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type in (tokenize.NAME, tokenize.OP)]
  uses = set()
  for i, tok in enumerate(tokens):
    if tok.string != "tf" or (i and tokens[i - 1].string == "."):
      continue
    chain, j = [], i + 1
    while j + 1 < len(tokens) and tokens[j].string == "." and tokens[j + 1].type == tokenize.NAME:
      chain.append(tokens[j + 1].string)
      j += 2
    if chain:
      uses.add(".".join(chain))
  return uses


def _lacks(obj, chain: str) -> bool:
  for name in chain.split("."):
    if not hasattr(obj, name):
      return True
    obj = getattr(obj, name)
  return False


def uncovered_tf_uses(standin=_TF_STANDIN) -> dict[str, list[str]]:
  """{module: the `tf.` calls it makes that `standin` lacks}, for each of TF_MODULES; empty
  when tfds can download, unpack and write without TensorFlow."""
  out = {}
  for name in TF_MODULES:
    module = importlib.import_module(name)
    with open(module.__file__, encoding="utf-8") as f:
      missing = sorted(c for c in tf_uses(f.read()) if _lacks(standin, c))
    if missing:
      out[name] = missing
  return out


def _check_tf_standin(tfds_name: str) -> None:
  """PrepareError, before any download, when the installed tfds calls TensorFlow in ways the
  stand-in does not cover."""
  try:
    uncovered = uncovered_tf_uses()
  except (ImportError, OSError) as e:  # a tfds whose modules moved
    uncovered = {"tensorflow_datasets": [f"(cannot be checked: {e})"]}
  if uncovered:
    calls = "; ".join(f"{m}: {', '.join('tf.' + c for c in cs)}" for m, cs in uncovered.items())
    raise PrepareError(f"--tfds_name={tfds_name!r}: without TensorFlow this tfds cannot be used "
                       f"to prepare datasets (it calls {calls}). Install tensorflow-cpu in the "
                       f"environment that prepares the data (training does not need it), or "
                       f"tensorflow-datasets 4.9.10.")


def _more_open_files(least: int = 1000 + 1024) -> None:
  """Raises the soft limit on open files to `least` where the hard limit allows: tfds's
  shuffler keeps a file open per bucket (1,000) while it writes a split over 1 GB."""
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  if soft != resource.RLIM_INFINITY and soft < least:
    target = least if hard == resource.RLIM_INFINITY else min(least, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def without_tensorflow():
  """tfds's TensorFlow file calls (TF_MODULES) go to etils.epath while inside.

  tfds 4.9.10 also reads `importlib_resources.abc.Traversable` (the backport, which it requires
  only for Python < 3.9) when it looks up the checksums of a dataset's downloads; where that
  package is missing, the standard library's `importlib.resources` (the same API since 3.11)
  stands in for it.
  """
  modules = [m for m in map(importlib.import_module, TF_MODULES) if hasattr(m, "tf")]
  saved = [module.tf for module in modules]
  alias = importlib.util.find_spec("importlib_resources") is None
  if alias:
    sys.modules["importlib_resources"] = importlib.resources
  _more_open_files()
  for module in modules:
    module.tf = _TF_STANDIN
  try:
    yield
  finally:
    for module, tf in zip(modules, saved):
      module.tf = tf
    if alias and sys.modules.get("importlib_resources") is importlib.resources:
      del sys.modules["importlib_resources"]


# ---------------------------------------------------------------------------------------------
# The command.


def prepare(tfds_name: str, data_dir: str = "", download_dir: str = "", manual_dir: str = "",
            out: Callable[[str], None] = print) -> dict[str, int]:
  """Downloads and prepares `tfds_name` in ArrayRecord format; returns {split: pairs} as the
  pipeline reads them. Prints where the files go before starting (through `out`)."""
  tfds = _import_tfds()
  builder = open_builder(tfds_name, data_dir)
  has_tf = importlib.util.find_spec("tensorflow") is not None
  if not has_tf:
    _check_tf_standin(tfds_name)
  downloads = epath.Path(download_dir or builder.data_dir_root / "downloads")
  manual = epath.Path(manual_dir) if manual_dir else downloads / "manual"
  name = builder.info.full_name
  out(f"Preparing {name} in ArrayRecord format with tensorflow-datasets {tfds.__version__} "
      f"({'with TensorFlow' if has_tf else 'TensorFlow not installed: file calls on etils.epath'})"
      + (": already prepared, nothing to download." if _is_prepared(builder) else "."))
  out(f"  data       {builder.data_dir}")
  out(f"  downloads  {downloads} (unpacked into {downloads / 'extracted'}; not needed after)")
  out(f"  manual     {manual} (archives placed here by hand are used instead of downloading)")
  config = tfds.download.DownloadConfig(manual_dir=manual, try_download_gcs=False)
  with contextlib.nullcontext() if has_tf else without_tensorflow():
    try:
      builder.download_and_prepare(download_dir=downloads, download_config=config,
                                   file_format="array_record")
    except _user_errors(tfds) as e:
      raise PrepareError(_download_message(builder, e, tfds_name, downloads, manual)) from e
  sizes = split_sizes(builder, tfds_name, data_dir)
  languages = ", ".join(builder.info.features.languages)
  out(f"Prepared {name} ({languages}) at {builder.data_dir}. Splits as the pipeline reads them "
      f"(tfds.data_source):")
  for split, n in sizes.items():
    out(f"  {split:<12}{n:>12,} pairs")
  out(f"Train on it: --config.dataset=tfds --config.tfds_name={tfds_name}"
      + (f" --config.tfds_data_dir={data_dir}" if data_dir else "")
      + f", with --config.source_lang and --config.target_lang two of {languages} (either "
      f"direction).")
  return sizes


def _user_errors(tfds) -> tuple:
  """What goes wrong with the network, the disk or the files rather than in the code (tfds
  raises AssertionError for missing manual downloads)."""
  import requests  # pylint: disable=g-import-not-at-top  (a dependency of tfds)
  from tensorflow_datasets.core.download import download_manager, extractor
  return (OSError, AssertionError, requests.exceptions.RequestException,
          tfds.download.DownloadError, download_manager.NonMatchingChecksumError,
          extractor.ExtractError)


def _download_message(builder, error, tfds_name, downloads, manual) -> str:
  """One line: what failed, and where the files are to fix it."""
  names = sorted({i.filename for i in (builder.url_infos or {}).values() if i.filename})
  by_hand = (f"fetch the archives elsewhere and put them in --manual_dir={manual} (tfds "
             f"records these for the dataset; a config uses some: {', '.join(names)})"
             if names else f"check --manual_dir={manual}")
  first = " ".join(str(error).split())[:600]
  return (f"--tfds_name={tfds_name!r}: preparing failed with {type(error).__name__}: {first}. "
          f"Check the connection (HTTPS_PROXY), the space left under {downloads} and "
          f"{builder.data_dir_root}, or {by_hand}; run again (finished downloads are kept).")


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments {' '.join(argv[1:])!r}; use --tfds_name=NAME/CONFIG and the "
         f"--data_dir, --download_dir, --manual_dir flags.")
  try:
    prepare(_TFDS_NAME.value, _DATA_DIR.value, _DOWNLOAD_DIR.value, _MANUAL_DIR.value)
  except PrepareError as e:
    fail(str(e))


if __name__ == "__main__":
  app.run(main)
