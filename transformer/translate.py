"""Translates text files: `python -m transformer.translate --workdir=DIR [--input=F] [--output=F]`.

Source lines come from --input (or stdin), translations go to --output (or stdout): exactly one
output line per input line, in order. Lines are batched by length (transformer/translator.py).

  --checkpoint=latest|best|averaged|STEP|DIR   which parameters (default latest)
  --beam_size=4 --length_penalty=0.6                     §6.1 (defaults from the run config)

Bad input: an empty line gives an empty line; a line longer than the model's max_length is
truncated, with a warning naming the line numbers; bytes that are not UTF-8 are replaced by
U+FFFD, with a warning naming the lines. A workdir without checkpoint or tokenizer is an error
that says how to make them. A progress bar is shown on stderr when writing to a file.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging

from transformer import compilation_cache, cpu_devices
from transformer.cli import fail, line_list
from transformer.workdir import WorkdirError, translator_from_workdir


def read_lines(data: bytes) -> tuple[list[str], list[int]]:
  """Lines of `data` (\\n or \\r\\n ends; a last line without \\n counts) and the 1-based numbers
  of lines that were not valid UTF-8 (their bad bytes become U+FFFD)."""
  if data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  raw = data.split(b"\n")
  if raw and raw[-1] == b"":
    raw.pop()
  lines, invalid = [], []
  for number, line in enumerate(raw, start=1):
    if line.endswith(b"\r"):
      line = line[:-1]
    try:
      lines.append(line.decode("utf-8"))
    except UnicodeDecodeError:
      lines.append(line.decode("utf-8", errors="replace"))
      invalid.append(number)
  return lines, invalid


def one_line(text: str) -> str:
  """A translation as one output line (no line breaks inside)."""
  return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so that the library
  functions of several command modules can be imported together)."""
  flags.DEFINE_string("workdir", None, "A training workdir (tokenizer and checkpoints).")
  flags.DEFINE_string("input", None, "Source text file, one sentence a line (default stdin).")
  flags.DEFINE_string("output", None, "Where to write the translations (default stdout).")
  flags.DEFINE_string(
      "checkpoint", "latest", "latest | best | averaged | a step | a checkpoint directory.")
  flags.DEFINE_integer("beam_size", None, "Beam size; 1 = greedy (default: run config, 4).")
  flags.DEFINE_float("length_penalty", None,
                     "Length penalty length_penalty (default: run config, 0.6).")
  flags.DEFINE_integer("batch_size", 64, "Sentences per batch.")
  cpu_devices.define_decoding_flag()
  flags.declare_key_flag("cpu_devices")  # listed by --help, as this module's own
  flags.DEFINE_integer("max_extra", None,
                                    "Output limit = input length + this (default: run config, 50).")


def output_problem(path: str) -> str | None:
  """Why `path` cannot be written as the output file, or None: checked before any model loads,
  so a typo costs a second, not a whole translation."""
  path = os.path.abspath(path)
  folder = os.path.dirname(path)
  if os.path.isdir(path):
    return f"--output={path} is a directory; give a file name in it."
  if not os.path.isdir(folder):
    return f"--output={path}: the directory {folder} does not exist; create it first."
  if os.path.exists(path) and not os.access(path, os.W_OK):
    return f"--output={path} exists and is not writable; choose another file or fix its mode."
  if not os.path.exists(path) and not os.access(folder, os.W_OK | os.X_OK):
    return f"--output={path}: the directory {folder} is not writable."
  return None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  if FLAGS.input and not os.path.isfile(FLAGS.input):
    fail(f"--input={FLAGS.input} is not a file.")
  problem = output_problem(FLAGS.output) if FLAGS.output else None
  if problem:
    fail(problem)
  try:  # before any JAX operation: the CPU backend reads it once
    cpu_devices.configure(FLAGS.cpu_devices, lambda n: True, collectives=False)
  except ValueError as e:
    fail(e)
  compilation_cache.enable("auto")
  try:
    translator, info = translator_from_workdir(
        FLAGS.workdir, FLAGS.checkpoint, beam_size=FLAGS.beam_size,
        length_penalty=FLAGS.length_penalty, batch_size=FLAGS.batch_size,
        max_extra=FLAGS.max_extra)
  except (WorkdirError, ValueError) as e:
    fail(e)

  if FLAGS.input:
    with open(FLAGS.input, "rb") as f:
      data = f.read()
  else:
    data = sys.stdin.buffer.read()
  lines, invalid = read_lines(data)
  if invalid:
    logging.warning("%d line(s) are not valid UTF-8; the bad bytes were replaced by U+FFFD: "
                    "line(s) %s.", len(invalid), line_list(invalid))
  logging.info("Translating %d lines with %s, beam %d, length_penalty %g.", len(lines),
               info.describe(), translator.beam_size, translator.length_penalty)

  bar = None
  if FLAGS.output:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=len(lines), unit="line", file=sys.stderr, dynamic_ncols=True)
  start = time.perf_counter()
  try:
    translations = translator.translate(lines, progress=bar.update if bar else None)
  finally:
    if bar is not None:
      bar.close()
  seconds = time.perf_counter() - start
  assert len(translations) == len(lines)

  text = "".join(one_line(t) + "\n" for t in translations)
  if FLAGS.output:
    with open(FLAGS.output, "w", encoding="utf-8") as f:
      f.write(text)
  else:
    sys.stdout.write(text)
    sys.stdout.flush()
  logging.info("Translated %d lines in %.1f s (%.1f lines/s).", len(lines), seconds,
               len(lines) / seconds if seconds > 0 else 0.0)


if __name__ == "__main__":
  define_flags()
  app.run(main)
