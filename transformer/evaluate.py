"""Translates a split and scores it: `python -m transformer.evaluate --workdir=DIR --split=test`.

Prints sacreBLEU's corpus BLEU and chrF with their signature and the paper-style tokenized BLEU
(transformer/scores.py), and writes them to WORKDIR/eval_<split>.json (`bleu`, `chrf`,
`tokenized_bleu`, `exact_match`, `num_examples`, `sacrebleu_signature`, and how they were
obtained: checkpoint, beam size, alpha, time) with the translations, one per line, in
WORKDIR/eval_<split>.txt.

The trainer calls `evaluate_split(config, workdir, split, params=..., tokenizer=...,
max_examples=...)` with its in-memory parameters; the command loads them from a checkpoint
(`--checkpoint=latest|best|averaged|STEP|DIR`, see transformer/workdir.py).
"""

from __future__ import annotations

import json
import os
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from transformer import compilation_cache, workdir as workdir_lib
from transformer.cli import fail
from transformer.scores import score_translations
from transformer.translator import Translator
from transformer.workdir import WorkdirError

SPLIT_KEYS = {"train": "train_split", "validation": "eval_split", "test": "test_split"}


def resolve_split(config, split: str) -> str:
  """"test", "validation", "train" -> the run config's split names; other names unchanged."""
  key = SPLIT_KEYS.get(split)
  return str(config.get(key, split)) if key else split


def _run_config(config, workdir: str):
  if config is not None:
    return config
  config = workdir_lib.load_run_config(workdir)
  if config is None:
    raise WorkdirError(
        f"No run config in {os.path.abspath(workdir)}: config.json is missing, so the data to "
        "evaluate on is unknown. Pass --config=configs/NAME.py (the config the model was trained "
        f"with), or train with `python train.py --config=CONFIG --workdir={workdir}`.")
  return config


def evaluate_split(config, workdir: str, split: str, *, params=None, tokenizer=None,
                   max_examples: int = 0, beam_size: int | None = None, write: bool = True,
                   checkpoint: str | int = "latest", alpha: float | None = None,
                   model_config=None, batch_size: int | None = None,
                   step: int | None = None) -> dict:
  """Translates `split` (its first `max_examples` pairs; 0 = all), scores it, logs samples.

  Args:
    config: the run config (ConfigDict of configs/*.py); None reads WORKDIR/config.json.
    workdir: the run's directory (tokenizer, checkpoints; results are written here).
    split: "test", "validation", "train" (mapped through config.*_split) or a split name.
    params: parameters to use; None loads `checkpoint` from the workdir.
    tokenizer: the tokenizer; None loads WORKDIR/tokenizer.model.
    max_examples: evaluate the first N pairs only (0 = the whole split).
    beam_size, alpha: default config.beam_size, config.length_penalty (4 and 0.6).
    write: write WORKDIR/eval_<split>.json and eval_<split>.txt (process 0 only).
    checkpoint: latest | best | averaged | a step | a directory, when `params` is None.
    model_config: the TransformerConfig of `params`; default from `config` and the tokenizer.
    batch_size: sentences per decoding batch; default config.eval_batch_size.
    step: the training step of `params`, recorded in the result.

  Returns:
    score_translations' dict (bleu, chrf, tokenized_bleu, exact_match, num_examples,
    sacrebleu_signature) plus split, checkpoint, step, beam_size, alpha, truncated_lines,
    seconds, sentences_per_sec.
  """
  from transformer.data import load_pairs  # pylint: disable=g-import-not-at-top
  if tokenizer is None:
    tokenizer = workdir_lib.load_tokenizer(workdir)
  config = _run_config(config, workdir)
  if params is None:
    params, model_config, info = workdir_lib.load_params(workdir, checkpoint)
    checkpoint_text, step = info.describe(), info.step
  else:
    if model_config is None:
      from transformer.training.validation import model_config_from  # pylint: disable=g-import-not-at-top
      model_config = model_config_from(config, tokenizer.vocab_size)
    checkpoint_text = "parameters in memory" + (f" (step {step})" if step is not None else "")
  beam_size = int(config.get("beam_size", 4) if beam_size is None else beam_size)
  alpha = float(config.get("length_penalty", 0.6) if alpha is None else alpha)
  translator = Translator(model_config, params, tokenizer, beam_size=beam_size, alpha=alpha,
                          max_extra=int(config.get("max_decode_extra", 50)),
                          batch_size=int(batch_size or config.get("eval_batch_size", 64)))

  split_name = resolve_split(config, split)
  pairs = load_pairs(config, split_name)
  if max_examples and max_examples > 0:
    pairs = pairs[:max_examples]
  if not pairs:
    raise ValueError(f"The {split_name!r} split is empty: nothing to evaluate.")
  sources = [s for s, _ in pairs]
  references = [t for _, t in pairs]
  start = time.perf_counter()
  results = translator.translate_detailed(sources)
  seconds = time.perf_counter() - start
  hypotheses = [r.text for r in results]

  scores = score_translations(hypotheses, references, lang=config.target_lang)
  scores.update({
      "split": split_name,
      "checkpoint": checkpoint_text,
      "step": step,
      "beam_size": beam_size,
      "alpha": alpha,
      "max_examples": int(max_examples or 0),
      "truncated_lines": sum(r.truncated for r in results),
      "seconds": round(seconds, 3),
      "sentences_per_sec": round(len(pairs) / seconds, 3) if seconds > 0 else None,
  })
  for i in range(min(int(config.get("num_samples_to_print", 5)), len(pairs))):
    logging.info("Sample %d\n  source:     %s\n  reference:  %s\n  hypothesis: %s", i + 1,
                 sources[i], references[i], hypotheses[i])
  logging.info("%s (%d examples, %s): BLEU %.2f, chrF %.2f, tokenized BLEU %.2f, exact match "
               "%.1f%% [%s]", split_name, len(pairs), checkpoint_text, scores["bleu"],
               scores["chrf"], scores["tokenized_bleu"], scores["exact_match"],
               scores["sacrebleu_signature"])
  if write and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, f"eval_{split}.json"), "w", encoding="utf-8") as f:
      json.dump(scores, f, indent=2)
      f.write("\n")
    with open(os.path.join(workdir, f"eval_{split}.txt"), "w", encoding="utf-8") as f:
      f.writelines(h.replace("\n", " ") + "\n" for h in hypotheses)
  return scores


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so that the library
  functions of several command modules can be imported together)."""
  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_string("split", "test", "test | validation | train | a split name.")
  flags.DEFINE_string(
      "checkpoint", "latest", "latest | best | averaged | a step | a checkpoint directory.")
  flags.DEFINE_integer("beam_size", None, "Beam size (default: the run config's, 4).")
  flags.DEFINE_float("alpha", None, "Length penalty (default: the run config's, 0.6).")
  flags.DEFINE_integer("max_examples", 0, "Evaluate the first N pairs (0 = all).")
  flags.DEFINE_integer("batch_size", None, "Sentences per batch (default eval_batch_size).")
  config_flags.DEFINE_config_file(
      "config", None, "Run config (default: WORKDIR/config.json, written by the trainer).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  logging.set_verbosity(logging.INFO)
  compilation_cache.enable("auto")
  try:
    scores = evaluate_split(FLAGS.config, FLAGS.workdir, FLAGS.split,
                            checkpoint=FLAGS.checkpoint, beam_size=FLAGS.beam_size,
                            alpha=FLAGS.alpha, max_examples=FLAGS.max_examples,
                            batch_size=FLAGS.batch_size)
  except (WorkdirError, ValueError) as e:
    fail(e)
  bleu_sig, chrf_sig = scores["sacrebleu_signature"].split("; ")
  print(f"{scores['split']}: {scores['num_examples']} sentences, {scores['checkpoint']}, beam "
        f"{scores['beam_size']}, alpha {scores['alpha']}")
  print(f"BLEU  {scores['bleu']:6.2f}   {bleu_sig}")
  print(f"chrF  {scores['chrf']:6.2f}   {chrf_sig}")
  print(f"tokenized BLEU {scores['tokenized_bleu']:6.2f}   (the paper's way: tokenized, compounds "
        "split, multi-bleu; compare with Table 2)")
  print(f"Written to {os.path.join(os.path.abspath(FLAGS.workdir), f'eval_{FLAGS.split}.json')}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
