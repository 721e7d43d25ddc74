"""Evaluates a trained model on a split: `python -m transformer.evaluate --workdir=DIR`.

What evaluation means is the task's (transformer/tasks): a translation model translates the split
with beam search and prints sacreBLEU's corpus BLEU and chrF with their signature and the
paper-style tokenized BLEU (transformer/scores.py), writing them to WORKDIR/eval_<split>.json
(`bleu`, `chrf`, `tokenized_bleu`, `exact_match`, `num_examples`, `sacrebleu_signature`, and how
they were obtained: checkpoint, beam size, length penalty, time) with the translations, one per
line, in WORKDIR/eval_<split>.txt. A language model reports its loss in nats per token and its
perplexity on the split. Those names are the latest checkpoint's; any other checkpoint's results
go to eval_<split>.<checkpoint>.json and .txt (`averaged`, `best`, `step3000`: so scoring the
average does not replace the latest's scores, nor the reverse).

The parameters come from a checkpoint (`--checkpoint=latest|best|averaged|STEP|DIR`, see
transformer/workdir.py); the run config from WORKDIR/config.json unless --config is given.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from transformer import compilation_cache, cpu_devices
from transformer import workdir as workdir_lib
from transformer.cli import fail
from transformer.tasks import get_task
from transformer.workdir import WorkdirError


def run_config(config, workdir: str):
  """`config`, or the one WORKDIR/config.json recorded."""
  if config is not None:
    return config
  config = workdir_lib.load_run_config(workdir)
  if config is None:
    raise WorkdirError(
        f"No run config in {os.path.abspath(workdir)}: config.json is missing, so the data to "
        "evaluate on is unknown. Pass --config=configs/NAME.py (the config the model was trained "
        f"with), or train with `python train.py --config=CONFIG --workdir={workdir}`.")
  return config


def evaluate_workdir(workdir: str, split: str, *, config=None, checkpoint: str | int = "latest",
                     **options) -> dict:
  """Loads the tokenizer and `checkpoint` of `workdir` and evaluates `split` through the run's
  task; `options` go to the task (translation: beam_size, length_penalty, max_examples,
  batch_size)."""
  config = run_config(config, workdir)
  tokenizer = workdir_lib.load_tokenizer(workdir)
  params, model_config, info = workdir_lib.load_params(workdir, checkpoint)
  return get_task(config).evaluate(config, workdir, split, params=params,
                                   model_config=model_config, tokenizer=tokenizer,
                                   step=info.step, checkpoint_text=info.describe(),
                                   results_name=workdir_lib.results_name(split, checkpoint),
                                   **options)


def search_options(config, **options) -> dict:
  """The decoding flags (beam_size, length_penalty, max_examples, ...) as the run's task takes
  them: all of them for translation, none for a language model, which has no search."""
  return options if get_task(config).name == "translation" else {}


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so that the library
  functions of several command modules can be imported together)."""
  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_string("split", "test", "test | validation | train | a split name.")
  flags.DEFINE_string(
      "checkpoint", "latest", "latest | best | averaged | a step | a checkpoint directory.")
  flags.DEFINE_integer("beam_size", None, "Beam size (default: the run config's, 4).")
  flags.DEFINE_float("length_penalty", None,
                     "Length penalty (default: the run config's, 0.6).")
  flags.DEFINE_integer("max_examples", 0, "Evaluate the first N pairs (0 = all).")
  cpu_devices.define_decoding_flag()
  flags.declare_key_flag("cpu_devices")  # listed by --help, as this module's own
  flags.DEFINE_integer("batch_size", None, "Sentences per batch (default eval_batch_size).")
  config_flags.DEFINE_config_file(
      "config", None, "Run config (default: WORKDIR/config.json, written by the trainer).")


def _print_translation_scores(scores: dict) -> None:
  bleu_sig, chrf_sig = scores["sacrebleu_signature"].split("; ")
  print(f"{scores['split']}: {scores['num_examples']} sentences, {scores['checkpoint']}, beam "
        f"{scores['beam_size']}, length_penalty {scores['length_penalty']}")
  print(f"BLEU  {scores['bleu']:6.2f}   {bleu_sig}")
  print(f"chrF  {scores['chrf']:6.2f}   {chrf_sig}")
  print(f"tokenized BLEU {scores['tokenized_bleu']:6.2f}   (the paper's way: tokenized, "
        "compounds split, multi-bleu; compare with Table 2)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  logging.set_verbosity(logging.INFO)
  try:  # before any JAX operation: the CPU backend reads it once
    cpu_devices.configure(FLAGS.cpu_devices, lambda n: True, collectives=False)
  except ValueError as e:
    fail(e)
  compilation_cache.enable("auto")
  try:
    config = run_config(FLAGS.config, FLAGS.workdir)
    options = search_options(config, beam_size=FLAGS.beam_size,
                             length_penalty=FLAGS.length_penalty,
                             max_examples=FLAGS.max_examples, batch_size=FLAGS.batch_size)
    scores = evaluate_workdir(FLAGS.workdir, FLAGS.split, config=config,
                              checkpoint=FLAGS.checkpoint, **options)
  except (WorkdirError, ValueError) as e:
    fail(e)
  if "bleu" in scores:
    _print_translation_scores(scores)
  else:
    print(f"{scores['split']}: {scores['tokens']:,} tokens, {scores['checkpoint']}: loss "
          f"{scores['nll']:.4f} nats per token, perplexity {scores['perplexity']:.3f}")
  name = workdir_lib.results_name(FLAGS.split, FLAGS.checkpoint)
  print(f"Written to {os.path.join(os.path.abspath(FLAGS.workdir), name)}.json")


if __name__ == "__main__":
  define_flags()
  app.run(main)
