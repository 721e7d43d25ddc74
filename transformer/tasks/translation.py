"""Translation (the paper's task): source-target pairs, the encoder-decoder model, BLEU.

Batches are `{"inputs": source ids, "targets": target ids}` with optional `*_segmentation` and
`*_position` arrays for packed rows (docs/architecture.md); the model is teacher-forced on the
targets (the decoder shifts them right itself). Validation reports the loss, perplexity and
token accuracy, and BLEU and exact match of `eval_bleu_examples` validation sentences;
the final evaluation translates the test split with beam search (§6.1) and scores it.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
from absl import logging
from jax.experimental import multihost_utils

from transformer.config import PAD_ID, ConfigError
from transformer.data import pipeline, sources
from transformer.data.batching import BATCHINGS
from transformer.data.encoded_cache import ENCODED_DIR
from transformer.data.pipeline import TOKEN_BUDGETS
from transformer.scores import score_translations
from transformer.tasks.base import TaskBase, TrainingData, require_int
from transformer.translator import Translator

SPLIT_KEYS = {"train": "train_split", "validation": "eval_split", "test": "test_split"}


def resolve_split(config, split: str) -> str:
  """"test", "validation", "train" -> the run config's split names; other names unchanged."""
  key = SPLIT_KEYS.get(split)
  return str(config.get(key, split)) if key else split


def process_0_first(make, what: str):
  """`make()` on process 0, then on the other processes after a barrier (one process: make())."""
  if jax.process_count() == 1:
    return make()
  result = make() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(f"process 0 made the {what}")
  return result if jax.process_index() == 0 else make()


def translate_split(config, workdir: str, split: str, *, params, model_config, tokenizer,
                    max_examples: int = 0, beam_size: int | None = None,
                    length_penalty: float | None = None, batch_size: int | None = None,
                    write: bool = True, step: int | None = None,
                    checkpoint_text: str = "", results_name: str = "") -> dict:
  """Translates `split` (its first `max_examples` pairs; 0 = all), scores it, logs samples.

  Args:
    config: the run config (ConfigDict of configs/*.py).
    workdir: where WORKDIR/<results_name>.json and .txt are written (`write`); the name is
      eval_<split> unless given (the evaluate command names other checkpoints' results apart:
      workdir.results_name).
    split: "test", "validation", "train" (mapped through config.*_split) or a split name.
    params, model_config, tokenizer: the model to translate with.
    beam_size, length_penalty: default config.beam_size, config.length_penalty (4 and 0.6).
    batch_size: sentences per decoding batch; default config.eval_batch_size.
    step, checkpoint_text: where `params` came from, recorded in the result.

  Returns:
    score_translations' dict (bleu, chrf, tokenized_bleu, exact_match, num_examples,
    sacrebleu_signature) plus split, checkpoint, step, beam_size, length_penalty,
    truncated_lines, seconds, sentences_per_sec.
  """
  beam_size = int(config.get("beam_size", 4) if beam_size is None else beam_size)
  length_penalty = float(config.get("length_penalty", 0.6) if length_penalty is None
                         else length_penalty)
  translator = Translator(model_config, params, tokenizer, beam_size=beam_size,
                          length_penalty=length_penalty,
                          max_extra=int(config.get("max_decode_extra", 50)),
                          batch_size=int(batch_size or config.get("eval_batch_size", 64)))
  split_name = resolve_split(config, split)
  pairs = sources.load_pairs(config, split_name)
  if max_examples and max_examples > 0:
    pairs = pairs[:max_examples]
  if not pairs:
    raise ValueError(f"The {split_name!r} split is empty: nothing to evaluate.")
  source_texts = [s for s, _ in pairs]
  references = [t for _, t in pairs]
  start = time.perf_counter()
  results = translator.translate_detailed(source_texts)
  seconds = time.perf_counter() - start
  hypotheses = [r.text for r in results]
  checkpoint_text = checkpoint_text or (
      "parameters in memory" + (f" (step {step})" if step is not None else ""))

  scores = score_translations(hypotheses, references, lang=config.target_lang)
  scores.update({
      "split": split_name,
      "checkpoint": checkpoint_text,
      "step": step,
      "beam_size": beam_size,
      "length_penalty": length_penalty,
      "max_examples": int(max_examples or 0),
      "truncated_lines": sum(r.truncated for r in results),
      "seconds": round(seconds, 3),
      "sentences_per_sec": round(len(pairs) / seconds, 3) if seconds > 0 else None,
  })
  for i in range(min(int(config.get("num_samples_to_print", 5)), len(pairs))):
    logging.info("Sample %d\n  source:     %s\n  reference:  %s\n  hypothesis: %s", i + 1,
                 source_texts[i], references[i], hypotheses[i])
  logging.info("%s (%d examples, %s): BLEU %.2f, chrF %.2f, tokenized BLEU %.2f, exact match "
               "%.1f%% [%s]", split_name, len(pairs), checkpoint_text, scores["bleu"],
               scores["chrf"], scores["tokenized_bleu"], scores["exact_match"],
               scores["sacrebleu_signature"])
  if write and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, results_name or f"eval_{split}")
    with open(path + ".json", "w", encoding="utf-8") as f:
      json.dump(scores, f, indent=2)
      f.write("\n")
    with open(path + ".txt", "w", encoding="utf-8") as f:
      f.writelines(h.replace("\n", " ") + "\n" for h in hypotheses)
  return scores


class TranslationTask(TaskBase):
  """The trainer's `Task` for translation (see tasks/base.py for the interface)."""

  name = "translation"
  architecture = "encoder_decoder"
  reference_config = "default"
  summed_metrics = ("source_tokens",)

  def validate(self, config, *, num_devices: int, process_count: int) -> None:
    require_int(config, "vocab_size")
    require_int(config, "tokens_per_batch", minimum=0)
    if config.get("token_budget", "padded") not in TOKEN_BUDGETS:
      raise ConfigError(f"token_budget={config.token_budget!r} is unknown; allowed: "
                        f"{', '.join(TOKEN_BUDGETS)}.")
    # Checked now, not when the final evaluation reaches them after training.
    require_int(config, "beam_size")
    require_int(config, "max_decode_extra", minimum=0)
    require_int(config, "prefetch", minimum=0)
    if config.batching == "packed":
      require_int(config, "pack_window")
    if not config.length_penalty >= 0:
      raise ConfigError(f"length_penalty={config.length_penalty!r} must be >= 0 (0.6 in §6.1).")
    if config.batching not in BATCHINGS:
      raise ConfigError(
          f"batching={config.batching!r} is unknown; allowed: {', '.join(BATCHINGS)}.")
    if config.batching == "tokens" and config.tokens_per_batch < config.max_length:
      raise ConfigError(
          f"tokens_per_batch={config.tokens_per_batch} is smaller than max_length="
          f"{config.max_length}: the longest sequence would not fit in a batch.")

  def rows_are_fixed(self, config) -> bool:
    """Whether `batch_size` sets the rows of every batch (else the token budget does)."""
    return config.batching in ("padded", "packed")

  def data(self, config, workdir: str) -> TrainingData:
    # The test split is read after training: a missing one must fail now, not hours later.
    if config.get("test_split"):
      sources.open_source(config, config.test_split)
    # Process 0 trains the tokenizer first; with a shared workdir the other hosts then load it
    # instead of repeating the work. Likewise the encoded split where all hosts use one entry
    # (token-budget batching plans over the whole split); shards are each host's own.
    tokenizer = process_0_first(lambda: pipeline.get_tokenizer(config, workdir), "tokenizer")
    row_multiple = jax.local_device_count()
    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
    cache_dir = os.path.join(workdir, ENCODED_DIR) if config.get("cache_encoded", True) else None
    make_iterator = lambda: pipeline.make_train_iterator(
        config, tokenizer, row_multiple=row_multiple, cache_dir=cache_dir, **hosts)
    shared_entry = cache_dir is not None and pipeline.reads_whole_split(
        config, jax.process_count())
    train_iter = (process_0_first(make_iterator, "encoded training split") if shared_entry
                  else make_iterator())
    eval_batches = []
    if config.eval_every_steps:
      eval_batches = list(pipeline.make_eval_batches(
          config, tokenizer, config.eval_split, num_batches=config.num_eval_batches,
          row_multiple=row_multiple, **hosts))
    return TrainingData(vocab_size=tokenizer.vocab_size, train_iter=train_iter,
                        eval_batches=eval_batches, tokenizer=tokenizer)

  def batch_metrics(self, batch: dict) -> dict:
    return {"source_tokens": jnp.sum(batch["inputs"] != PAD_ID).astype(jnp.float32)}

  def on_validation(self, config, workdir, params, model_config, tokenizer, step) -> dict:
    """BLEU and exact match of `eval_bleu_examples` validation sentences (as evaluate does)."""
    if not config.get("eval_bleu_examples", 0) or tokenizer is None:
      return {}
    scores = translate_split(config, workdir, "validation", params=params,
                             model_config=model_config, tokenizer=tokenizer,
                             max_examples=config.eval_bleu_examples, write=False, step=step)
    logging.info("Step %d validation translations: BLEU %.2f, exact match %.1f%%", step,
                 scores["bleu"], scores["exact_match"])
    return {k: scores[k] for k in ("bleu", "chrf", "exact_match")}

  def final_evaluation(self, config, workdir, params, model_config, tokenizer, step,
                       validation=None):
    """Sample translations, BLEU and exact match on the test split -> WORKDIR/eval_test.json."""
    if not config.test_split:
      logging.info("config.test_split is empty: no final test evaluation (run "
                   "python -m transformer.evaluate --workdir=%s --split=NAME for one).", workdir)
      return None
    scores = translate_split(config, workdir, "test", params=params, model_config=model_config,
                             tokenizer=tokenizer, step=step)
    if jax.process_index() == 0:
      print(f"Test ({scores['num_examples']} examples, beam {scores['beam_size']}): "
            f"BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}, exact match "
            f"{scores['exact_match']:.1f}%  -> {os.path.join(workdir, 'eval_test.json')}")
    return scores

  def evaluate(self, config, workdir, split, *, params, model_config, tokenizer, step=None,
               checkpoint_text="", **options) -> dict:
    return translate_split(config, workdir, split, params=params, model_config=model_config,
                           tokenizer=tokenizer, step=step, checkpoint_text=checkpoint_text,
                           **options)
